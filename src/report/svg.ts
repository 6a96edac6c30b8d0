// Tiny dependency-free SVG chart helpers for the HTML report: a bar chart and a line chart.

/** Escapes text for HTML/SVG content and attributes. */
export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const fmt = (v: number, digits = 3): string => (Number.isFinite(v) ? Number(v.toFixed(digits)).toString() : '–');

/** One bar series (values in [0, 1]). */
export interface BarSeries {
  readonly name: string;
  readonly color: string;
  readonly values: readonly number[];
}

interface Margins {
  readonly l: number;
  readonly r: number;
  readonly t: number;
  readonly b: number;
}

/** A chart's size (default width 640) and margins, and the plot area inside them. */
function plotArea(
  opts: { width?: number; height?: number },
  defaultHeight: number,
  m: Margins,
): { W: number; H: number; m: Margins; pw: number; ph: number } {
  const W = opts.width ?? 640;
  const H = opts.height ?? defaultHeight;
  return { W, H, m, pw: W - m.l - m.r, ph: H - m.t - m.b };
}

/** Grouped vertical bar chart of shares in [0, 1]. */
export function barChart(
  categories: readonly string[],
  series: readonly BarSeries[],
  opts: { title: string; width?: number; height?: number },
): string {
  const { W, H, m, pw, ph } = plotArea(opts, 300, { l: 48, r: 16, t: 28, b: 64 });
  const maxV = Math.max(0.05, ...series.flatMap((s) => s.values.filter(Number.isFinite)));
  const top = Math.min(1, Math.ceil(maxV * 10) / 10);
  const gw = pw / Math.max(1, categories.length);
  const bw = (gw * 0.8) / Math.max(1, series.length);
  const y = (v: number): number => m.t + ph - (v / top) * ph;
  const parts: string[] = [];
  parts.push(`<text x="${W / 2}" y="18" text-anchor="middle" font-weight="bold">${esc(opts.title)}</text>`);
  for (let i = 0; i <= 5; i++) {
    const v = (top * i) / 5;
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`);
    parts.push(`<text x="${m.l - 6}" y="${y(v) + 4}" text-anchor="end" font-size="11">${fmt(v * 100, 0)}%</text>`);
  }
  categories.forEach((c, i) => {
    series.forEach((s, j) => {
      const v = s.values[i] ?? NaN;
      if (!Number.isFinite(v)) return;
      const x = m.l + i * gw + gw * 0.1 + j * bw;
      parts.push(
        `<rect x="${x.toFixed(1)}" y="${y(v).toFixed(1)}" width="${bw.toFixed(1)}" height="${(m.t + ph - y(v)).toFixed(1)}" fill="${s.color}"><title>${esc(s.name)} ${esc(c)}: ${fmt(v * 100, 1)}%</title></rect>`,
      );
    });
    const cx = m.l + i * gw + gw / 2;
    parts.push(
      `<text x="${cx}" y="${m.t + ph + 14}" text-anchor="end" font-size="11" transform="rotate(-30 ${cx} ${m.t + ph + 14})">${esc(c)}</text>`,
    );
  });
  series.forEach((s, j) => {
    parts.push(
      `<rect x="${W - m.r - 150}" y="${m.t + j * 16}" width="10" height="10" fill="${s.color}"/><text x="${W - m.r - 135}" y="${m.t + j * 16 + 9}" font-size="11">${esc(s.name)}</text>`,
    );
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">${parts.join('')}</svg>`;
}

/** One line series of (x, y) points. */
export interface LineSeries {
  readonly name: string;
  readonly color: string;
  readonly points: readonly (readonly [number, number])[];
}

/** A marked point (e.g. the chosen operating point). */
export interface Marker {
  readonly label: string;
  readonly color: string;
  readonly x: number;
  readonly y: number;
}

/** Line chart with auto-scaled axes, optional horizontal reference line and markers. */
export function lineChart(
  series: readonly LineSeries[],
  opts: {
    title: string;
    xLabel: string;
    yLabel: string;
    width?: number;
    height?: number;
    hLine?: { y: number; label: string };
    markers?: readonly Marker[];
    percent?: boolean;
  },
): string {
  const { W, H, m, pw, ph } = plotArea(opts, 340, { l: 60, r: 16, t: 28, b: 44 });
  const xs = series.flatMap((s) => s.points.map((p) => p[0])).concat((opts.markers ?? []).map((k) => k.x));
  const ys = series
    .flatMap((s) => s.points.map((p) => p[1]))
    .concat(
      (opts.markers ?? []).map((k) => k.y),
      opts.hLine ? [opts.hLine.y] : [],
    );
  const finite = (a: number[]): number[] => a.filter(Number.isFinite);
  let [x0, x1] = [Math.min(...finite(xs), 1), Math.max(...finite(xs), 0)];
  let [y0, y1] = [Math.min(...finite(ys), 1), Math.max(...finite(ys), 0)];
  if (!(x1 > x0)) [x0, x1] = [0, 1];
  if (!(y1 > y0)) [y0, y1] = [y0 - 0.01, y0 + 0.01];
  const padY = (y1 - y0) * 0.05;
  y0 -= padY;
  y1 = Math.min(y1 + padY, opts.percent ? 1.0005 : y1 + padY);
  const px = (v: number): number => m.l + ((v - x0) / (x1 - x0)) * pw;
  const py = (v: number): number => m.t + ph - ((v - y0) / (y1 - y0)) * ph;
  const pct = (v: number, d: number): string => (opts.percent ? `${fmt(v * 100, d)}%` : fmt(v, d + 2));
  const parts: string[] = [];
  parts.push(`<text x="${W / 2}" y="18" text-anchor="middle" font-weight="bold">${esc(opts.title)}</text>`);
  for (let i = 0; i <= 5; i++) {
    const vy = y0 + ((y1 - y0) * i) / 5;
    const vx = x0 + ((x1 - x0) * i) / 5;
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${py(vy)}" y2="${py(vy)}" stroke="#eee"/>`);
    parts.push(`<text x="${m.l - 6}" y="${py(vy) + 4}" text-anchor="end" font-size="11">${pct(vy, 1)}</text>`);
    parts.push(`<text x="${px(vx)}" y="${m.t + ph + 16}" text-anchor="middle" font-size="11">${pct(vx, 0)}</text>`);
  }
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
  parts.push(`<text x="${m.l + pw / 2}" y="${H - 6}" text-anchor="middle" font-size="12">${esc(opts.xLabel)}</text>`);
  parts.push(
    `<text x="14" y="${m.t + ph / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 14 ${m.t + ph / 2})">${esc(opts.yLabel)}</text>`,
  );
  if (opts.hLine) {
    parts.push(
      `<line x1="${m.l}" x2="${W - m.r}" y1="${py(opts.hLine.y)}" y2="${py(opts.hLine.y)}" stroke="#c00" stroke-dasharray="4 3"/>`,
    );
    parts.push(
      `<text x="${m.l + 4}" y="${py(opts.hLine.y) + 13}" font-size="11" fill="#c00">${esc(opts.hLine.label)}</text>`,
    );
  }
  series.forEach((s, j) => {
    const pts = [...s.points].filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])).sort((a, b) => a[0] - b[0]);
    if (pts.length > 0)
      parts.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(' ')}"/>`,
      );
    parts.push(
      `<line x1="${m.l + 10}" x2="${m.l + 26}" y1="${m.t + 12 + j * 16}" y2="${m.t + 12 + j * 16}" stroke="${s.color}" stroke-width="2"/><text x="${m.l + 30}" y="${m.t + 16 + j * 16}" font-size="11">${esc(s.name)}</text>`,
    );
  });
  (opts.markers ?? []).forEach((k, i) => {
    if (!Number.isFinite(k.x) || !Number.isFinite(k.y)) return;
    const cx = px(k.x);
    const right = cx > m.l + pw * 0.6; // label on the side with room
    parts.push(`<circle cx="${cx}" cy="${py(k.y)}" r="5" fill="${k.color}"><title>${esc(k.label)}</title></circle>`);
    parts.push(
      `<text x="${right ? cx - 8 : cx + 8}" y="${py(k.y) + 18 + i * 14}" text-anchor="${right ? 'end' : 'start'}" font-size="11" fill="${k.color}">${esc(k.label)}</text>`,
    );
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">${parts.join('')}</svg>`;
}
