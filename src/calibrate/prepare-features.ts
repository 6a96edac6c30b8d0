// The pooled features selfxit mode stores for its candidate cuts: each cut's pooling, and the plan that keeps them and
// the sample images within the memory cap (float32, float16, fewer cutmix copies, fewer candidate cuts, no augmented
// copies — each reduction a warning; images that leave the features too little of the cap: a floor, and a warning).
import type { AugmentKind } from './augment.js';
import { candidateCuts } from './candidate-cuts.js';
import { cutGeometry, FEATURE_BYTES, type FeatureRequest, type FeatureStorage } from './features.js';
import type { CutPoint } from '../graph/index.js';
import { chooseGrid, headFeatureDim } from './pool.js';
import { featureBatchRows, type PrepareContext } from './prepare-context.js';
import type { ResolvedPrepareOptions } from './prepare-options.js';

/** Pooling of each cut: the largest average grid within `maxFeatures`, plus the `maxPoolGrid` max grid (1x1 when
 * that side does not divide the map; none for 0). */
export function poolingRequests(
  cuts: readonly CutPoint[],
  o: Pick<ResolvedPrepareOptions, 'maxFeatures' | 'maxPoolGrid'>,
): FeatureRequest[] {
  return cuts.map((cut) => {
    const g = cutGeometry(cut);
    const grid = chooseGrid(g.channels, g.height, g.width, o.maxFeatures);
    const side = o.maxPoolGrid;
    if (side === 0) return { cut, grid };
    const maxGrid: [number, number] = g.height % side === 0 && g.width % side === 0 ? [side, side] : [1, 1];
    return { cut, grid, maxGrid };
  });
}

/** Candidate cuts, their pooling, the storage of their features and the augmentation that fit `maxFeatureBytes`. */
export interface FeaturePlan {
  readonly cuts: readonly CutPoint[];
  readonly requests: readonly FeatureRequest[];
  readonly storage: FeatureStorage;
  readonly augment: readonly AugmentKind[];
  /** Bytes held beside the features under the same cap: the sample images and one batch of augmented copies. */
  readonly imageBytes: number;
  /** Bytes of float32 probabilities held beside them under the same cap: the teacher's of every row (samples and
   * copies) and a candidate head's out-of-fold ones of the samples. */
  readonly probBytes: number;
  /** The storage and the memory under the cap, in words (for the report and the CLI). */
  readonly note: string;
}

/** Bytes in words: KB below 1 MB, MB with one decimal below 10 MB. */
const MB = (bytes: number): string =>
  bytes < 2 ** 20 ? `${(bytes / 1024).toFixed(1)} KB` : `${(bytes / 2 ** 20).toFixed(bytes < 10 * 2 ** 20 ? 1 : 0)} MB`;

/** Bytes of one uint8 sample image of the model's input. */
const imageSize = (c: Pick<PrepareContext, 'io'>): number => c.io.input.height * c.io.input.width * c.io.input.channels;

/**
 * The first that fits the cap together with the sample images and, with augmentation, one batch of their copies:
 * float32 features of every candidate; float16; float16 with fewer candidates (spread over the MACs as before; cutmix
 * copies dropped first, one at a time); float16 at one cut without augmented copies (kept even over the cap). Each
 * reduction is a warning. The images never refuse a run: the features (and copies) get what they leave of the cap, but
 * at least what float16 features of every candidate without copies take (at most the cap): when that floor applies,
 * float16 of every candidate without copies comes before fewer candidates. When the chosen plan holds more than the
 * cap, a warning gives its bytes and names the `--limit` that keeps it within.
 */
export function planFeatures(c: PrepareContext, all: readonly CutPoint[]): FeaturePlan {
  const { o, warnings } = c;
  const n = c.samples.count;
  const cap = o.maxFeatureBytes;
  const images = n * imageSize(c);
  const k = c.io.classes;
  const make = (cuts: readonly CutPoint[], storage: FeatureStorage, augment: readonly AugmentKind[]) => {
    const requests = poolingRequests(cuts, o);
    const dims = requests.reduce((a, r) => {
      const g = cutGeometry(r.cut);
      return a + headFeatureDim(g.channels, r.grid, r.maxGrid);
    }, 0);
    const bytes = n * (1 + augment.length) * dims * FEATURE_BYTES[storage];
    const copies = augment.length ? Math.min(n * augment.length, featureBatchRows(c, requests)) * imageSize(c) : 0;
    // beside them for the whole fit: the teacher's float32 probabilities of every row, and a candidate head's
    // out-of-fold ones of the samples (n × k): 400 + 200 MB at 50,000 images with flip and 1,000 classes. Not
    // counted: with a trainer pool, each head training in flight holds its own n × k out-of-fold buffer too (an
    // ensemble's members are summed into one as they arrive), up to the pool's concurrency more
    const probBytes = (n * (1 + augment.length) + n) * k * 4;
    return {
      cuts,
      requests,
      storage,
      augment,
      bytes,
      probBytes,
      imageBytes: images + copies,
      total: bytes + probBytes + images + copies,
    };
  };
  /** The memory under the cap, in words. */
  const held = (p: ReturnType<typeof make>): string =>
    `; with the ${n} sample images (${MB(images)})${p.imageBytes > images ? ` and a batch of their copies (${MB(p.imageBytes - images)})` : ''}${p.probBytes >= 2 ** 20 ? ` and the ${k}-class probabilities (${MB(p.probBytes)})` : ''}: ${MB(p.total)} of the ${MB(cap)} cap`;
  // The features' and copies' share: what the images leave of the cap, at least the floor (then over the cap: said so).
  const every = make(all, 'f16', []); // float16 of every candidate (and their probabilities), no copies: the floor
  const room = Math.max(cap - images, Math.min(every.total - images, cap));
  const floor = room > cap - images;
  const fits = (p: ReturnType<typeof make>): boolean => p.total - images <= room;
  /** The chosen plan, with its reduction's warning and, when it holds more than the cap, the over-cap one. */
  const chosen = (p: ReturnType<typeof make>, note: string, reduction?: string): FeaturePlan => {
    if (reduction) warnings.push(reduction);
    if (p.total > cap) warnings.push(overCap(c, images, p.total, floor));
    return { ...p, note };
  };
  const f32 = make(all, 'f32', o.augment);
  const rows = `${n * (1 + o.augment.length)} rows x ${all.length} cuts`;
  if (fits(f32)) return chosen(f32, `float32, ${MB(f32.bytes)} (${rows}${held(f32)})`);
  const f16 = make(all, 'f16', o.augment);
  if (fits(f16))
    return chosen(f16, `float16, ${MB(f16.bytes)} (${rows}; float32 would take ${MB(f32.bytes)}${held(f16)})`);
  // cutmix copies go before candidate cuts: they are extra training rows, the cuts are where exits can be
  const others = o.augment.filter((k) => k !== 'cutmix');
  for (let k = o.augment.length - others.length - 1; k >= 0; k--) {
    const p = make(all, 'f16', [...others, ...Array<'cutmix'>(k).fill('cutmix')]);
    if (fits(p)) {
      const note = `float16, ${MB(p.bytes)}, ${k} of ${o.augment.length - others.length} cutmix copies (all would take ${MB(f16.bytes)}${held(p)})`;
      return chosen(
        p,
        note,
        `Feature memory cap: kept ${k} of ${o.augment.length - others.length} cutmix copies (${note}); raise maxFeatureBytes / --max-feature-memory to keep all`,
      );
    }
  }
  // under the floor, every candidate cut without copies (the floor's own size) before fewer cuts
  if (floor && o.augment.length && fits(every)) {
    const note = `float16, ${MB(every.bytes)}, every candidate cut, no augmented copies (with them: ${MB(f16.bytes)}${held(every)})`;
    return chosen(
      every,
      note,
      `Feature memory cap: no augmented copies (${note}); raise maxFeatureBytes / --max-feature-memory or use fewer samples to keep them`,
    );
  }
  for (let m = all.length - 1; m >= 1; m--) {
    const p = make(candidateCuts(all, m), 'f16', others);
    if (fits(p)) {
      const note = `float16, ${MB(p.bytes)}, ${m} of ${all.length} candidate cuts (all ${all.length} would take ${MB(f16.bytes)}${held(p)})`;
      return chosen(
        p,
        note,
        `Feature memory cap: kept ${m} of ${all.length} candidate cuts (${note}); raise maxFeatureBytes / --max-feature-memory to keep all`,
      );
    }
  }
  const last = make(candidateCuts(all, 1), 'f16', []);
  const over = last.total > cap ? `, still over the cap of ${MB(cap)}` : '';
  const note = `float16, ${MB(last.bytes)}, 1 of ${all.length} candidate cuts, no augmented copies (${held(last).slice(2)})${over}`;
  return chosen(
    last,
    note,
    `Feature memory cap: ${note}; raise maxFeatureBytes / --max-feature-memory or use fewer samples`,
  );
}

/**
 * The warning when the chosen plan holds `total` bytes, more than the cap: the sample images (`images`, alone over the
 * cap or, with `floor`, leaving the features less than float16 of every candidate) and the `--limit` whose images and
 * such features per image fit the cap.
 */
function overCap(c: PrepareContext, images: number, total: number, floor: boolean): string {
  const { height, width, channels } = c.io.input;
  const n = c.samples.count;
  const cap = c.o.maxFeatureBytes;
  const limit = Math.max(1, Math.floor((cap * n) / total));
  const what = images > cap ? 'alone exceed' : floor ? 'leave too little of' : 'with the smallest features exceed';
  return (
    `Feature memory cap: the ${n} sample images (${height}x${width}x${channels}: ${MB(images)} as uint8) ${what} the ${MB(cap)} cap ` +
    `(maxFeatureBytes / --max-feature-memory), which holds them beside the pooled features: with the features this run ` +
    `holds ${MB(total)}, more than the cap; to lower memory use fewer images (--limit ${limit} keeps the images and ` +
    `such features within the cap) or raise the cap`
  );
}

/**
 * The warning, before any image is read, when `count` sample images of the model's input alone exceed the selfxit
 * cap (count known: a reader or a batch; `limit` applied): the `--limit` whose images and float16 features of every
 * candidate fit the cap. None otherwise.
 */
export function imagesOverCapEarly(
  o: Pick<ResolvedPrepareOptions, 'mode' | 'maxFeatureBytes' | 'maxFeatures' | 'maxPoolGrid' | 'limit'>,
  io: Pick<PrepareContext, 'io'>,
  cuts: readonly CutPoint[],
  count: number,
): string | undefined {
  const n = Math.min(count, o.limit);
  const image = imageSize(io);
  const cap = o.maxFeatureBytes;
  if (o.mode !== 'selfxit' || !(n * image > cap)) return undefined;
  const dims = poolingRequests(candidateCuts(cuts), o).reduce(
    (a, r) => a + headFeatureDim(cutGeometry(r.cut).channels, r.grid, r.maxGrid),
    0,
  );
  const limit = Math.max(1, Math.floor(cap / (image + dims * FEATURE_BYTES.f16)));
  const { height, width, channels } = io.io.input;
  return (
    `Feature memory cap: the ${n} sample images (${height}x${width}x${channels}: ${MB(n * image)} as uint8) alone exceed ` +
    `the ${MB(cap)} cap (maxFeatureBytes / --max-feature-memory); they are read and held anyway, so this run holds more ` +
    `than the cap and may run out of memory; use fewer images (--limit ${limit} keeps the images and float16 features ` +
    `of every candidate cut within the cap) or raise the cap`
  );
}

/** Share of the backbone's parameters one exit head may have when the defaults are sized for many classes. */
export const HEAD_PARAM_SHARE = 0.0125;

/**
 * From this many classes on, the default heads are sized by {@link HEAD_PARAM_SHARE}. Below it (CIFAR-10, the shipped
 * model) a pool-linear head is small in bytes and the defaults stay as measured, whatever the backbone's size.
 */
export const MANY_CLASSES = 100;

/**
 * Head sizes for many classes (e.g. 1,000; from {@link MANY_CLASSES}): with the defaults, a pool-linear head has `features × classes` weights,
 * more than a small backbone's few percent. Unless the caller chose the head kinds or width, when a pool-linear head
 * on the widest candidate would exceed {@link HEAD_PARAM_SHARE} of the backbone's parameters, only pool-mlp heads are
 * trained, with the hidden width that keeps each within that share (at least 8; a max-pooling grid above 1 drops to 1
 * first). Returns the options unchanged otherwise, and the change in words.
 */
export function sizeHeadsForClasses(
  o: ResolvedPrepareOptions,
  chosen: { readonly headKinds?: unknown; readonly hidden?: unknown; readonly maxPoolGrid?: unknown },
  cuts: readonly CutPoint[],
  classes: number,
  backboneParams: number,
): { o: ResolvedPrepareOptions; note?: string } {
  if (o.mode !== 'selfxit' || chosen.headKinds !== undefined || chosen.hidden !== undefined) return { o };
  if (classes < MANY_CLASSES) return { o };
  const budget = HEAD_PARAM_SHARE * backboneParams;
  const widest = (opts: Pick<ResolvedPrepareOptions, 'maxFeatures' | 'maxPoolGrid'>): number =>
    Math.max(
      0,
      ...poolingRequests(candidateCuts(cuts), opts).map((r) =>
        headFeatureDim(cutGeometry(r.cut).channels, r.grid, r.maxGrid),
      ),
    );
  if ((widest(o) + 1) * classes <= budget) return { o };
  const maxPoolGrid = chosen.maxPoolGrid === undefined ? Math.min(o.maxPoolGrid, 1) : o.maxPoolGrid;
  const d = widest({ ...o, maxPoolGrid });
  const hidden = Math.max(8, Math.min(o.hidden, Math.floor((budget - classes) / (d + 1 + classes))));
  const note = `${classes} classes: pool-mlp heads of width ${hidden}${maxPoolGrid !== o.maxPoolGrid ? ' and global max pooling' : ''} (each at most ${(HEAD_PARAM_SHARE * 100).toFixed(2)} % of the backbone's ${backboneParams} parameters; a pool-linear head would have ${(d + 1) * classes})`;
  return { o: { ...o, headKinds: ['pool-mlp'], hidden, maxPoolGrid }, note };
}
