// The scale and zero point of a quantized tensor, as the bundle manifest records them: plain types in a module without
// onnx-proto imports, so that the public type declarations (bundle/manifest.ts → types.ts) do not reach onnx-proto.

/** Element types of quantized activations a head can read. */
export type QuantDType = 'uint8' | 'int8';

/** How a quantized tensor maps to float: `x = (q - zeroPoint) * scale` (ONNX DequantizeLinear, per tensor). */
export interface Dequantization {
  readonly scale: number;
  readonly zeroPoint: number;
  readonly dtype: QuantDType;
}
