// Marked blocks in a Markdown file (BENCHMARKS.md): each generator owns the text between its own
// `<!-- <name>:start -->` and `<!-- <name>:end -->` comments and replaces only that, so `npm run bench` (block
// `bench:results`) and `npm run bench:heads` (blocks `bench:heads:<model>`) never overwrite each other's output.
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';

/** The start and end comments of block `name`. */
export function blockMarkers(name) {
  return { start: `<!-- ${name}:start -->`, end: `<!-- ${name}:end -->` };
}

/**
 * `text` with the body of block `name` replaced by `body`; when the markers are not both there (start before end),
 * the block is appended at the end with its markers. Pure.
 */
export function replaceBlock(text, name, body) {
  const { start, end } = blockMarkers(name);
  const i = text.indexOf(start);
  const j = i < 0 ? -1 : text.indexOf(end, i + start.length);
  if (i >= 0 && j >= 0) return `${text.slice(0, i + start.length)}\n${body}\n${text.slice(j)}`;
  return `${text}${text === '' || text.endsWith('\n') ? '' : '\n'}\n${start}\n${body}\n${end}\n`;
}

/** Replaces block `name` of the Markdown file `file` with `body`; a missing file starts as `title`. */
export async function writeBlock(file, name, body, title = '# Benchmarks') {
  const old = existsSync(file) ? await readFile(file, 'utf8') : `${title}\n`;
  await writeFile(file, replaceBlock(old, name, body));
}
