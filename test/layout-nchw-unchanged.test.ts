// An NCHW model's bundle does not change with layout inference: prepare with the graph telling NCHW for every 4-D cut
// writes the same bytes as prepare reading every cut as NCHW untold (what selfxit did before it told layouts).
import { describe, expect, it, vi } from 'vitest';
import { clusterImages, fittedMobileNet, QUICK_PREPARE, SMALL_MOBILE } from './fixtures/mobile-graphs.js';
import { ortNode } from './fixtures/ort-helpers.js';

/** prepare() of the fitted MobileNet fixture with the modules as currently registered (mocked or not). */
async function prepareMobile(): Promise<{ manifest: unknown; files: Map<string, Uint8Array>; layouts: unknown[] }> {
  const { prepare } = await import('../src/calibrate/prepare.js');
  const { analyzeModel, encodeModel } = await import('../src/graph/index.js');
  const model = await fittedMobileNet(SMALL_MOBILE, ortNode);
  const layouts = (await analyzeModel(model, { ort: ortNode })).cuts.map((c) => c.layout);
  const r = await prepare({
    model: encodeModel(model),
    samples: { data: clusterImages(200, 32, 32, 3), count: 200 },
    ort: ortNode,
    ...QUICK_PREPARE,
  });
  // seconds per step differ from run to run
  const manifest = { ...r.manifest, calibration: { ...r.manifest.calibration, timings: {} } };
  return { manifest, files: r.files, layouts };
}

describe('an NCHW model’s bundle', () => {
  it('is byte for byte the bundle of every cut read as NCHW untold', { timeout: 120_000 }, async () => {
    const told = await prepareMobile();
    expect(told.layouts.filter((l) => l === 'NCHW').length).toBeGreaterThan(8);
    expect(told.layouts).not.toContain('NHWC');
    vi.resetModules();
    vi.doMock('../src/graph/layout.js', () => ({ inferMapLayouts: () => new Map() }));
    try {
      const untold = await prepareMobile();
      expect(untold.layouts.every((l) => l === undefined)).toBe(true);
      expect(JSON.stringify(told.manifest)).toBe(JSON.stringify(untold.manifest));
      expect([...told.files.keys()]).toEqual([...untold.files.keys()]);
      for (const [f, b] of told.files)
        expect({ f, same: Buffer.compare(b, untold.files.get(f)!) === 0 }).toEqual({ f, same: true });
    } finally {
      vi.doUnmock('../src/graph/layout.js');
      vi.resetModules();
    }
  });
});
