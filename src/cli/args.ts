// Argument parsing helpers over node:util parseArgs that turn every parse problem into a UsageError.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from './dispatch.js';

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * Strict parse: unknown options and wrong value types become UsageError. `--help` is handled by the dispatcher.
 * An option with `multiple: true` may be given more than once and reads as a string[] in the order given.
 */
export function parseCommandArgs<O extends Options>(
  argv: readonly string[],
  options: O,
  positionals: { min: number; max: number; names: string },
): {
  values: {
    [K in keyof O]?: O[K]['type'] extends 'boolean' ? boolean : O[K] extends { multiple: true } ? string[] : string;
  };
  positionals: string[];
} {
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseArgs({ args: [...argv], options, allowPositionals: true, strict: true }) as typeof parsed;
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message.replace(/\. To specify a positional.*$/s, '') : String(e));
  }
  const n = parsed.positionals.length;
  if (n < positionals.min) throw new UsageError(`missing ${positionals.names}`);
  if (n > positionals.max) throw new UsageError(`unexpected argument "${parsed.positionals[positionals.max]}"`);
  return parsed as ReturnType<typeof parseCommandArgs<O>>;
}

/** {@link parseCommandArgs} for a command of exactly one positional argument (`name`, e.g. `<model.onnx>`). */
export function parseOneArgCommand<O extends Options>(
  argv: readonly string[],
  options: O,
  name: string,
): { values: ReturnType<typeof parseCommandArgs<O>>['values']; arg: string } {
  const { values, positionals } = parseCommandArgs(argv, options, { min: 1, max: 1, names: name });
  return { values, arg: positionals[0]! };
}

/** A required string option. */
export function requireOption(value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new UsageError(`missing required option ${flag}`);
  return value;
}
