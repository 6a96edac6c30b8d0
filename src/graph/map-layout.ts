// The layout of a cut's 4-D map, as plain types (free of onnx-proto: the page's public .d.ts reach them through the
// bundle manifest). graph/layout.ts tells it from a graph.

/** How a 4-D map holds its channels: `[N, C, H, W]`, or channels-last `[N, H, W, C]`. */
export type MapLayout = 'NCHW' | 'NHWC';
