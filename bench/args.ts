// Command-line flags of the bench scripts: each read flag is taken out of `args`, so what remains is positional.

/** `--name N` (a positive integer) removed from `args`; `dflt` when absent. */
export function intFlag(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(args.splice(i, 2)[1]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} needs a positive integer`);
  return v;
}

/** Whether the bare flag `--name` was given (removed from `args`). */
export function boolFlag(args: string[], name: string): boolean {
  const i = args.indexOf(name);
  if (i >= 0) args.splice(i, 1);
  return i >= 0;
}

/** `--name value` removed from `args`; undefined when absent. */
export function stringFlag(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i < 0 ? undefined : args.splice(i, 2)[1];
}
