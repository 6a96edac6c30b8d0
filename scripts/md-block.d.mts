// Types of scripts/md-block.mjs (plain JS so that scripts/bench.mjs runs under node without a build).

/** The start and end comments of block `name`: `<!-- <name>:start -->`, `<!-- <name>:end -->`. */
export function blockMarkers(name: string): { start: string; end: string };

/** `text` with the body of block `name` replaced by `body`, or the block appended when its markers are absent. Pure. */
export function replaceBlock(text: string, name: string, body: string): string;

/** Replaces block `name` of the Markdown file `file` with `body`; a missing file starts as `title` (default "# Benchmarks"). */
export function writeBlock(file: string, name: string, body: string, title?: string): Promise<void>;
