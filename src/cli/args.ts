// Argument parsing helpers over node:util parseArgs that turn every parse problem into a UsageError.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { SelfxitError } from '../errors.js';
import { UsageError } from './dispatch.js';

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * Strict parse: unknown options and wrong value types become UsageError. `--help` is handled by the dispatcher.
 * An option with `multiple: true` may be given more than once and reads as a string[] in the order given; any other
 * option that takes a value given twice is INVALID_ARGUMENT naming it (not the last one silently winning).
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
  let parsed: { values: Record<string, unknown>; positionals: string[]; tokens: ParsedToken[] };
  try {
    parsed = parseArgs({
      args: [...argv],
      options,
      allowPositionals: true,
      strict: true,
      tokens: true,
    }) as typeof parsed;
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message.replace(/\. To specify a positional.*$/s, '') : String(e));
  }
  refuseRepeats(parsed.tokens, options);
  const n = parsed.positionals.length;
  if (n < positionals.min) throw new UsageError(`missing ${positionals.names}`);
  if (n > positionals.max) throw new UsageError(`unexpected argument "${parsed.positionals[positionals.max]}"`);
  return parsed as ReturnType<typeof parseCommandArgs<O>>;
}

type ParsedToken = { kind: string; name?: string; rawName?: string; value?: string };

/** INVALID_ARGUMENT when an option that takes one value (a string option without `multiple`) is given more than once. */
function refuseRepeats(tokens: readonly ParsedToken[], options: Options): void {
  const seen = new Map<string, string[]>();
  for (const t of tokens) {
    const o = t.kind === 'option' && t.name !== undefined ? options[t.name] : undefined;
    if (!o || o.type !== 'string' || o.multiple) continue;
    const values = [...(seen.get(t.name!) ?? []), t.value ?? ''];
    seen.set(t.name!, values);
    if (values.length === 2)
      throw new SelfxitError(
        'INVALID_ARGUMENT',
        `--${t.name} was given more than once (${values.map((x) => JSON.stringify(x)).join(', ')}): it takes one value`,
        { option: `--${t.name}`, values },
      );
  }
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

/**
 * Tensor names from a comma-separated `--<list>` option and a repeatable `--<one>` option, in that order. Names in the
 * list are trimmed; a `--<one>` value is taken whole, so a name holding a comma (or spaces at its ends) can be given.
 * Undefined when neither is given; an empty name in the list is a UsageError.
 */
export function nameList(
  list: string | undefined,
  one: readonly string[] | undefined,
  flags: string,
): string[] | undefined {
  if (list === undefined && (one === undefined || one.length === 0)) return undefined;
  const fromList = list === undefined ? [] : list.split(',').map((s) => s.trim());
  if (fromList.some((s) => s === '')) throw new UsageError(`${flags.split(' ')[0]} has an empty name in "${list}"`);
  const whole = [...(one ?? [])];
  if (whole.some((s) => s === '')) throw new UsageError(`${flags.split(' ')[1]} was given an empty name`);
  return [...fromList, ...whole];
}
