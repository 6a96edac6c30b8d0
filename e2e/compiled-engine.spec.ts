// Browser tests of the compiled engine (load option `engine`, issue 12) on the tiny test bundles: the same decisions as
// the stage engine for several targets set with setTarget(), on WASM and on WebGPU (SwiftShader), and lazy segments kept:
// inputs that all exit early download no segment past the last exit they need; batches (classifyBatch) on the batch model
// on WASM, the same decisions as the stage engine's batches.
import { test, expect, type LaunchOptions, type Page } from '@playwright/test';
import type * as Selfxit from '../src/index.js';

declare global {
  interface Window {
    selfxit: typeof Selfxit;
    selfxitReady?: boolean;
  }
}

/** testkit.brief() of a result (e2e/pages/testkit.js). */
type Brief = Record<'index' | 'exit' | 'confidence' | 'stages', number> & Record<'label' | 'exitName', string>;
interface Kit {
  inputs(bundle: string): Promise<Float32Array[]>;
  brief(r: Selfxit.ClassifyResult): Brief;
}

const B = '/e2e/.bundles';

async function openPage(page: Page): Promise<void> {
  await page.goto('/e2e/pages/esm.html');
  await page.waitForFunction(() => window.selfxitReady === true, null, { timeout: 15_000 });
}

/** As in runtime.spec.ts: with --enable-unsafe-webgpu Chromium has SwiftShader's adapter; a fallback then fails. */
const webgpuExpected = (o: LaunchOptions): boolean => (o.args ?? []).includes('--enable-unsafe-webgpu');

for (const backend of ['wasm', 'webgpu'] as const) {
  test(`${backend}: the compiled engine decides as the stage engine on all 64 tiny inputs for several targets`, async ({
    page,
    launchOptions,
  }) => {
    test.skip(
      backend === 'webgpu' && !webgpuExpected(launchOptions),
      'Chromium launched without --enable-unsafe-webgpu',
    );
    test.setTimeout(240_000);
    await openPage(page);
    const out = await page.evaluate(
      async ({ B, backend }) => {
        const { selfxit } = window;
        const testkit = (window as unknown as { testkit: Kit }).testkit;
        const inputs = await testkit.inputs(`${B}/tiny`);
        const run = async (engine: 'compiled' | 'stages') => {
          const clf = await selfxit.load(`${B}/tiny/`, { backend, engine, cache: false });
          const targets: (number | null)[] = [null, 0.5, 0.9, 1];
          const results: Brief[][] = [];
          for (const t of targets) {
            if (t !== null) clf.setTarget(t);
            const rs: Brief[] = [];
            for (const x of inputs) rs.push(testkit.brief(await clf.classify(x)));
            results.push(rs);
          }
          const info = clf.info();
          await clf.dispose();
          return {
            results,
            backend: info.backend,
            engine: info.engine,
            reason: info.engineFallbackReason ?? info.fallbackReason ?? null,
          };
        };
        return { compiled: await run('compiled'), stages: await run('stages') };
      },
      { B, backend },
    );
    expect(out.compiled.backend, `fell back: ${out.compiled.reason}`).toBe(backend);
    expect(out.compiled.engine, `engine fallback: ${out.compiled.reason}`).toBe('compiled');
    expect(out.stages.engine).toBe('stages');
    let maxDiff = 0;
    const exits = new Set<number>();
    out.compiled.results.forEach((rs, t) =>
      rs.forEach((c, i) => {
        const s = out.stages.results[t]![i]!;
        const where = `target #${t} input ${i}`;
        expect({ index: c.index, label: c.label, exit: c.exit, exitName: c.exitName, stages: c.stages }, where).toEqual(
          { index: s.index, label: s.label, exit: s.exit, exitName: s.exitName, stages: s.stages },
        );
        maxDiff = Math.max(maxDiff, Math.abs(c.confidence - s.confidence));
        exits.add(c.exit);
      }),
    );
    console.log(`${backend}: compiled vs stages, max confidence difference ${maxDiff.toExponential(2)}`);
    expect(maxDiff).toBeLessThan(1e-5);
    expect(exits).toEqual(new Set([0, 1, -1]));
  });
}

// WASM only: on WebGPU batches run stage by stage with either engine (runtime.spec.ts checks their decisions there).
test("wasm: batches decide as the stage engine's batches for several targets, on the batch model", async ({ page }) => {
  test.setTimeout(240_000);
  await openPage(page);
  const out = await page.evaluate(async (B) => {
    const { selfxit } = window;
    const testkit = (window as unknown as { testkit: Kit }).testkit;
    const inputs = await testkit.inputs(`${B}/tiny`);
    const run = async (engine: 'compiled' | 'stages') => {
      const clf = await selfxit.load(`${B}/tiny/`, { backend: 'wasm', engine, cache: false });
      // A first batch loads every segment (some inputs run through); the batch model is made after it, in the
      // background: batches until one whose rows that ran through show one run's time spread evenly (at most
      // 50). Then batches at the bundle's thresholds and at three targets.
      let spread = false;
      const wait = engine === 'compiled' ? 50 : 1;
      for (let k = 0; k < wait && !spread; k++) {
        const rs = await clf.classifyBatch(inputs);
        spread = rs.every((r) => r.exit.index !== -1 || new Set(r.timings.stages).size === 1);
        if (!spread) await new Promise((r) => setTimeout(r, 20));
      }
      const results: Brief[][] = [];
      for (const t of [null, 0.5, 0.9, 1]) {
        if (t !== null) clf.setTarget(t);
        results.push((await clf.classifyBatch(inputs)).map((r) => testkit.brief(r)));
      }
      const info = clf.info();
      await clf.dispose();
      return {
        results,
        spread,
        backend: info.backend,
        batchEngine: info.batchEngine,
        reason: info.batchEngineFallbackReason ?? info.fallbackReason ?? null,
      };
    };
    return { compiled: await run('compiled'), stages: await run('stages') };
  }, B);
  expect(out.compiled.backend, `fell back: ${out.compiled.reason}`).toBe('wasm');
  expect(out.compiled.batchEngine, `batch engine: ${out.compiled.reason}`).toBe('compiled');
  expect(out.compiled.spread, 'the batch model ran').toBe(true);
  expect(out.stages.batchEngine).toBe('stages');
  let maxDiff = 0;
  const exits = new Set<number>();
  out.compiled.results.forEach((rs, t) =>
    rs.forEach((c, i) => {
      const s = out.stages.results[t]![i]!;
      const where = `target #${t} input ${i}`;
      expect({ index: c.index, exit: c.exit, stages: c.stages }, where).toEqual({
        index: s.index,
        exit: s.exit,
        stages: s.stages,
      });
      maxDiff = Math.max(maxDiff, Math.abs(c.confidence - s.confidence));
      exits.add(c.exit);
    }),
  );
  console.log(`wasm: batches, compiled vs stages, max confidence difference ${maxDiff.toExponential(2)}`);
  expect(maxDiff).toBeLessThan(1e-5);
  expect(exits).toEqual(new Set([0, 1, -1]));
});

test('compiled engine: inputs that all exit early download no segment past the last exit they need', async ({
  page,
}) => {
  await openPage(page);
  await page.request.get('/__log/reset');
  const out = await page.evaluate(async (B) => {
    const { selfxit } = window;
    const testkit = (window as unknown as { testkit: Kit }).testkit;
    const onnx = async (): Promise<string[]> =>
      ((await (await fetch('/__log')).json()) as string[])
        .filter((p) => p.endsWith('.onnx'))
        .map((p) => p.split('/').slice(-2).join('/'));
    const inputs = await testkit.inputs(`${B}/tiny`);
    // Every input leaves at exit 0 (tiny-exit0's thresholds).
    const clf0 = await selfxit.load(`${B}/tiny-exit0/`, { backend: 'wasm', engine: 'compiled', cache: false });
    const r0: Brief[] = [];
    for (const x of inputs) r0.push(testkit.brief(await clf0.classify(x)));
    const info0 = clf0.info();
    await clf0.dispose();
    const after0 = await onnx();
    // The tiny bundle's inputs that leave at exit 0 or 1 (its thresholds): segment 2 (backbone end) never loads.
    const want = (await (await fetch(`${B}/tiny/expected.json`)).json()) as { exit: number }[];
    const clf1 = await selfxit.load(`${B}/tiny/`, { backend: 'wasm', engine: 'compiled', cache: false });
    const r1: Brief[] = [];
    for (const [i, x] of inputs.entries()) if (want[i]!.exit >= 0) r1.push(testkit.brief(await clf1.classify(x)));
    const info1 = clf1.info();
    await clf1.dispose();
    return { r0, info0, after0, after1: await onnx(), r1, info1 };
  }, B);
  expect(out.info0.engine).toBe('compiled');
  expect(out.r0.every((r) => r.exit === 0 && r.stages === 1)).toBe(true);
  expect(out.after0).toEqual(['tiny-exit0/segment-0.onnx']);
  expect(out.info0.segments.map((s) => s.loaded)).toEqual([true, false, false]);
  expect(out.info1.engine).toBe('compiled');
  expect(new Set(out.r1.map((r) => r.exit))).toEqual(new Set([0, 1]));
  expect(out.after1).toEqual(['tiny-exit0/segment-0.onnx', 'tiny/segment-0.onnx', 'tiny/segment-1.onnx']);
  expect(out.info1.segments.map((s) => s.loaded)).toEqual([true, true, false]);
});
