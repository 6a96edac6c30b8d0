// bench/report.mjs's live exit pruning section on a hand-made record: the worst case and the bundle's thresholds with
// pruning beside the same engine without it (same loop), the exits pruned, and nothing rendered without the pairs.
import { describe, expect, it } from 'vitest';

interface Report {
  pruningSection(record: unknown): string;
  renderMarkdown(record: unknown, file: string): string;
}
// A plain-JS module: imported by URL so that the type-check does not look for its declarations.
const report = (await import(new URL('../bench/report.mjs', import.meta.url).href)) as Report;

const stats = (mean: number): { mean: number; p50: number; p95: number } => ({ mean, p50: mean, p95: mean });
const row = (variant: string, ratio: number, early: number, pruned: number[], warmup = 8): Record<string, unknown> => ({
  model: 'resnet20',
  variant,
  backend: 'wasm',
  threads: 1,
  config: { batch: 1, warmup },
  ratio: stats(ratio),
  early: stats(early),
  agreement: 0.99,
  exitNames: ['layer2.0', 'layer3.0', 'layer3.1'],
  pruneExits: !variant.endsWith('noprune'),
  prunedAtStart: pruned,
  prunedAtEnd: pruned,
});

describe('pruningSection', () => {
  it('puts each pruned variant beside its unpruned twin, with the ratio of their times and the exits pruned', () => {
    const record = {
      results: [
        row('selfxit', 0.85, 1.7, []),
        row('selfxit-noprune', 0.86, 1.72, []),
        row('worst-case', 1.02, 2.04, [0, 1, 2], 800),
        row('worst-case-noprune', 1.12, 2.24, [], 800),
      ],
    };
    const md = report.pruningSection(record);
    expect(md).toContain(
      '| ResNet-20 | 1 | worst case (every threshold at 1) | 1.020 / 1.020 | 1.120 / 1.120 | 0.911 |',
    );
    expect(md).toContain('layer2.0, layer3.0, layer3.1 → layer2.0, layer3.0, layer3.1');
    expect(md).toContain(
      "| ResNet-20 | 1 | bundle's thresholds | 0.850 / 0.850 | 0.860 / 0.860 | 0.988 | none → none |",
    );
    expect(md).toContain('Warm-up: 8 / 800 untimed calls');
    expect(report.renderMarkdown({ ...record, models: [] }, 'x.json')).toContain('### Live exit pruning');
  });

  it('renders nothing without a pair', () => {
    expect(report.pruningSection({ results: [row('worst-case', 1.1, 2, [])] })).toBe('');
  });
});
