// Worker of the demo's "bring your own model": decodes the user's images to the model's input size and runs the
// SDK's pure calibration core, prepare(), with onnxruntime-web — entirely in the browser, nothing uploaded.
import * as Comlink from 'comlink';
import { prepare, resolveModelIO } from '../../src/calibrate/prepare.js';
import { decodeModel, graphInputs, graphOutputs } from '../../src/graph/index.js';
import { SelfxitError, toErrorPayload } from '../../src/errors.js';
import { loadOrt } from '../../src/runtime/ort-backend.js';
import { decodeImages } from './decode-images.js';
import type { ByomProgress, ByomReply, ByomRequest, ByomWorkerApi } from './byom-protocol.js';

const api: ByomWorkerApi = {
  async prepare(req: ByomRequest, onProgress: (p: ByomProgress) => void): Promise<ByomReply> {
    const t0 = performance.now();
    try {
      const model = decodeModel(req.model);
      const io = resolveModelIO(
        model,
        { inputs: graphInputs(model), outputs: graphOutputs(model) },
        {
          ...(req.shape ?? {}),
          mean: req.mean,
          std: req.std,
        },
      );
      const shape = { height: io.input.height, width: io.input.width, channels: io.input.channels };
      onProgress({ stage: 'decode', done: 0, total: req.images.length });
      const decoded = await decodeImages(req.images, shape, (done) =>
        onProgress({ stage: 'decode', done, total: req.images.length }),
      );
      if (decoded.count === 0)
        throw new SelfxitError(
          'INVALID_SAMPLES',
          `none of the ${req.images.length} files could be decoded as an image`,
        );
      const handle = await loadOrt({ backend: 'wasm', threads: req.threads, wasmPaths: req.wasmPaths });
      const result = await prepare({
        model: req.model,
        samples: { data: decoded.data, count: decoded.count },
        input: { ...shape, mean: req.mean, std: req.std },
        target: req.target,
        ...(req.labels ? { labels: req.labels } : {}), // a count other than the model's classes: INVALID_ARGUMENT
        ort: handle.ort,
        onProgress: (p) =>
          onProgress({ stage: p.stage, done: p.done, total: p.total, ...(p.detail ? { detail: p.detail } : {}) }),
        generator: 'selfxit demo (in-browser prepare)',
      });
      return {
        ok: true,
        manifest: result.manifest,
        files: result.files,
        seconds: (performance.now() - t0) / 1000,
        images: decoded.count,
      };
    } catch (e) {
      return { ok: false, error: toErrorPayload(e) };
    }
  },
};

Comlink.expose(api);
