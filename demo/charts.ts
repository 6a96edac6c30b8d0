// Small dependency-free SVG charts for the demo: grouped bars, overlaid histograms, a trade-off curve and a
// stacked cost bar. Each function redraws its container from plain data.

const SVG_NS = 'http://www.w3.org/2000/svg';

/** One coloured data series. */
export interface Series {
  readonly name: string;
  readonly color: string;
}

type Attrs = Record<string, string | number>;

function el<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Attrs = {}, text?: string): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgRoot(container: HTMLElement, width: number, height: number, label: string): SVGSVGElement {
  container.replaceChildren();
  const svg = el('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': label, class: 'chart-svg' });
  container.append(svg);
  return svg;
}

function legend(container: HTMLElement, series: readonly Series[]): void {
  const box = document.createElement('div');
  box.className = 'chart-legend';
  for (const s of series) {
    const item = document.createElement('span');
    const dot = document.createElement('i');
    dot.style.background = s.color;
    item.append(dot, s.name);
    box.append(item);
  }
  container.append(box);
}

const PAD = { left: 40, right: 10, top: 10, bottom: 34 };

/**
 * The smallest "round" axis end ≥ `max` whose `ticks` equal steps are 1, 2, 2.5 or 5 × a power of ten, so every tick
 * label is a round number (0.6 → 0.8 with 4 ticks: 0, 0.2, 0.4, 0.6, 0.8).
 */
export function niceAxisMax(max: number, ticks = 4): number {
  if (!(max > 0) || !Number.isFinite(max)) return 1;
  const raw = max / ticks;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * pow).find((st) => st >= raw * (1 - 1e-9)) ?? 10 * pow;
  return step * ticks;
}

function yAxis(svg: SVGSVGElement, w: number, h: number, max: number, fmt: (v: number) => string, ticks = 4): void {
  for (let i = 0; i <= ticks; i++) {
    const v = (max * i) / ticks;
    const y = h - PAD.bottom - ((h - PAD.top - PAD.bottom) * i) / ticks;
    svg.append(el('line', { x1: PAD.left, x2: w - PAD.right, y1: y, y2: y, class: i === 0 ? 'axis' : 'grid' }));
    svg.append(el('text', { x: PAD.left - 6, y: y + 3.5, class: 'tick', 'text-anchor': 'end' }, fmt(v)));
  }
}

/**
 * Grouped vertical bars: one group per category, one bar per series. `values[s][c]` is series s at category c.
 */
export function barChart(
  container: HTMLElement,
  opts: {
    readonly categories: readonly string[];
    readonly series: readonly Series[];
    readonly values: readonly (readonly number[])[];
    readonly max?: number;
    readonly format?: (v: number) => string;
    readonly label: string;
  },
): void {
  const w = 360;
  const h = 200;
  const svg = svgRoot(container, w, h, opts.label);
  const fmt = opts.format ?? ((v: number) => String(+v.toFixed(2)));
  const max = opts.max ?? niceAxisMax(Math.max(1e-9, ...opts.values.flat()));
  yAxis(svg, w, h, max, fmt);
  const plotW = w - PAD.left - PAD.right;
  const plotH = h - PAD.top - PAD.bottom;
  const groupW = plotW / Math.max(1, opts.categories.length);
  const barW = Math.min(26, (groupW * 0.8) / opts.series.length);
  opts.categories.forEach((cat, c) => {
    const gx = PAD.left + groupW * c + (groupW - barW * opts.series.length) / 2;
    opts.series.forEach((s, si) => {
      const v = opts.values[si]?.[c] ?? 0;
      const bh = (plotH * Math.min(v, max)) / max;
      const rect = el('rect', {
        x: gx + barW * si,
        y: h - PAD.bottom - bh,
        width: barW - 2,
        height: Math.max(0, bh),
        rx: 2,
        fill: s.color,
      });
      rect.append(el('title', {}, `${s.name} · ${cat}: ${fmt(v)}`));
      svg.append(rect);
    });
    svg.append(
      el(
        'text',
        { x: PAD.left + groupW * (c + 0.5), y: h - PAD.bottom + 14, class: 'tick', 'text-anchor': 'middle' },
        cat,
      ),
    );
  });
  legend(container, opts.series);
}

/** Overlaid histograms of several samples on shared bins (counts as a share of each series). */
export function histogram(
  container: HTMLElement,
  opts: {
    readonly series: readonly Series[];
    readonly samples: readonly (readonly number[])[];
    readonly bins?: number;
    readonly unit: string;
    readonly label: string;
  },
): void {
  const w = 360;
  const h = 200;
  const svg = svgRoot(container, w, h, opts.label);
  const all = opts.samples.flat().filter(Number.isFinite);
  if (all.length === 0) {
    legend(container, opts.series);
    return;
  }
  const sorted = [...all].sort((a, b) => a - b);
  // Clip the axis at the 99th percentile so one slow outlier does not squash the chart.
  const hi = niceAxisMax(sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))]! * 1.05 || 1);
  const bins = opts.bins ?? 24;
  const binW = hi / bins;
  const shares = opts.samples.map((xs) => {
    const counts = new Array<number>(bins).fill(0);
    for (const x of xs) counts[Math.min(bins - 1, Math.max(0, Math.floor(x / binW)))]! += 1;
    return counts.map((n) => n / Math.max(1, xs.length));
  });
  const max = niceAxisMax(Math.max(1e-9, ...shares.flat()));
  yAxis(svg, w, h, max, (v) => `${+(v * 100).toFixed(1)}%`);
  const plotW = w - PAD.left - PAD.right;
  const plotH = h - PAD.top - PAD.bottom;
  shares.forEach((counts, si) => {
    const color = opts.series[si]?.color ?? '#888';
    counts.forEach((share, b) => {
      const bh = (plotH * share) / max;
      svg.append(
        el('rect', {
          x: PAD.left + (plotW * b) / bins,
          y: h - PAD.bottom - bh,
          width: plotW / bins - 1,
          height: bh,
          fill: color,
          'fill-opacity': 0.55,
        }),
      );
    });
    // Median marker.
    const xs = [...(opts.samples[si] ?? [])].sort((a, b) => a - b);
    if (xs.length > 0) {
      const med = xs[Math.floor(xs.length / 2)]!;
      const x = PAD.left + (plotW * Math.min(med, hi)) / hi;
      svg.append(
        el('line', {
          x1: x,
          x2: x,
          y1: PAD.top,
          y2: h - PAD.bottom,
          stroke: color,
          'stroke-width': 2,
          'stroke-dasharray': '4 3',
        }),
      );
    }
  });
  for (let i = 0; i <= 4; i++) {
    const v = (hi * i) / 4;
    svg.append(
      el(
        'text',
        { x: PAD.left + (plotW * i) / 4, y: h - PAD.bottom + 14, class: 'tick', 'text-anchor': 'middle' },
        String(+v.toFixed(2)),
      ),
    );
  }
  svg.append(
    el('text', { x: PAD.left + plotW / 2, y: h - 4, class: 'axis-label', 'text-anchor': 'middle' }, opts.unit),
  );
  legend(container, opts.series);
}

/** Agreement vs MACs fraction along the calibration curve, with the current point (and optionally a measured one) marked. */
export function tradeoffChart(
  container: HTMLElement,
  opts: {
    readonly points: readonly { readonly x: number; readonly y: number }[];
    readonly current?: { readonly x: number; readonly y: number };
    readonly measured?: { readonly x: number; readonly y: number };
    readonly label: string;
  },
): void {
  const w = 360;
  const h = 200;
  const svg = svgRoot(container, w, h, opts.label);
  const ys = opts.points.map((p) => p.y).concat(opts.measured ? [opts.measured.y] : []);
  const yMin = Math.max(0, Math.floor((Math.min(...ys, 1) - 0.005) * 100) / 100);
  const yMax = 1;
  const plotW = w - PAD.left - PAD.right;
  const plotH = h - PAD.top - PAD.bottom;
  const sx = (x: number): number => PAD.left + plotW * Math.min(1, Math.max(0, x));
  const sy = (y: number): number => h - PAD.bottom - (plotH * (y - yMin)) / (yMax - yMin || 1);
  for (let i = 0; i <= 4; i++) {
    const v = yMin + ((yMax - yMin) * i) / 4;
    svg.append(el('line', { x1: PAD.left, x2: w - PAD.right, y1: sy(v), y2: sy(v), class: i === 0 ? 'axis' : 'grid' }));
    svg.append(
      el('text', { x: PAD.left - 6, y: sy(v) + 3.5, class: 'tick', 'text-anchor': 'end' }, `${(v * 100).toFixed(1)}`),
    );
    const xv = i / 4;
    svg.append(
      el(
        'text',
        { x: sx(xv), y: h - PAD.bottom + 14, class: 'tick', 'text-anchor': 'middle' },
        `${Math.round(xv * 100)}%`,
      ),
    );
  }
  svg.append(
    el(
      'text',
      { x: PAD.left + plotW / 2, y: h - 4, class: 'axis-label', 'text-anchor': 'middle' },
      'MACs vs full model',
    ),
  );
  const sortedPts = [...opts.points].sort((a, b) => a.x - b.x);
  if (sortedPts.length > 0) {
    const d = sortedPts.map((p, i) => `${i ? 'L' : 'M'}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' ');
    svg.append(el('path', { d, fill: 'none', stroke: 'var(--c-curve)', 'stroke-width': 2 }));
  }
  if (opts.current) {
    const c = opts.current;
    svg.append(
      el('circle', { cx: sx(c.x), cy: sy(c.y), r: 6, fill: 'var(--c-accent)', stroke: '#fff', 'stroke-width': 2 }),
    );
  }
  if (opts.measured) {
    const m = opts.measured;
    const x = sx(m.x);
    const y = sy(Math.max(yMin, m.y));
    svg.append(
      el('path', {
        d: `M${x - 5},${y - 5} L${x + 5},${y + 5} M${x - 5},${y + 5} L${x + 5},${y - 5}`,
        stroke: 'var(--c-full)',
        'stroke-width': 2.5,
      }),
    );
  }
  legend(container, [
    { name: 'calibration curve (agreement %)', color: 'var(--c-curve)' },
    { name: 'chosen point', color: 'var(--c-accent)' },
    ...(opts.measured ? [{ name: 'measured here', color: 'var(--c-full)' }] : []),
  ]);
}

/** Horizontal stacked bar: MACs spent per exit region and MACs saved, as shares of the full model. */
export function costBar(
  container: HTMLElement,
  opts: {
    readonly parts: readonly { readonly name: string; readonly value: number; readonly color: string }[];
    readonly label: string;
  },
): void {
  const w = 360;
  const h = 64;
  const svg = svgRoot(container, w, h, opts.label);
  const total = opts.parts.reduce((s, p) => s + p.value, 0) || 1;
  let x = 0;
  for (const p of opts.parts) {
    const pw = ((w - 2) * p.value) / total;
    const rect = el('rect', { x: 1 + x, y: 8, width: Math.max(0, pw - 1), height: 30, fill: p.color, rx: 3 });
    rect.append(el('title', {}, `${p.name}: ${(p.value * 100).toFixed(1)}%`));
    svg.append(rect);
    if (pw > 34)
      svg.append(
        el(
          'text',
          { x: 1 + x + pw / 2, y: 27, class: 'bar-label', 'text-anchor': 'middle' },
          `${Math.round((p.value / total) * 100)}%`,
        ),
      );
    x += pw;
  }
  legend(
    container,
    opts.parts.map((p) => ({ name: p.name, color: p.color })),
  );
}

/** Lines over a shared x axis (e.g. images seen): `values[s][i]` is series s at `x[i]` (NaN: no point), y in [0, 1] as %. */
export function lineChart(
  container: HTMLElement,
  opts: {
    readonly x: readonly number[];
    readonly series: readonly Series[];
    readonly values: readonly (readonly number[])[];
    readonly xLabel: string;
    readonly label: string;
  },
): void {
  const w = 360;
  const h = 200;
  const svg = svgRoot(container, w, h, opts.label);
  yAxis(svg, w, h, 1, (v) => `${Math.round(v * 100)}%`);
  const plotW = w - PAD.left - PAD.right;
  const plotH = h - PAD.top - PAD.bottom;
  const xMax = niceAxisMax(Math.max(1, ...opts.x));
  const sx = (x: number): number => PAD.left + (plotW * x) / xMax;
  const sy = (y: number): number => h - PAD.bottom - plotH * Math.min(1, Math.max(0, y));
  for (let i = 0; i <= 4; i++)
    svg.append(
      el(
        'text',
        { x: sx((xMax * i) / 4), y: h - PAD.bottom + 14, class: 'tick', 'text-anchor': 'middle' },
        String((xMax * i) / 4),
      ),
    );
  svg.append(
    el('text', { x: PAD.left + plotW / 2, y: h - 4, class: 'axis-label', 'text-anchor': 'middle' }, opts.xLabel),
  );
  opts.series.forEach((s, si) => {
    let d = '';
    let pen = false;
    opts.x.forEach((x, i) => {
      const v = opts.values[si]?.[i] ?? NaN;
      if (!Number.isFinite(v)) {
        pen = false;
        return;
      }
      d += `${pen ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(v).toFixed(1)} `;
      pen = true;
    });
    if (d) svg.append(el('path', { d, fill: 'none', stroke: s.color, 'stroke-width': 2, 'data-series': s.name }));
  });
  legend(container, opts.series);
}
