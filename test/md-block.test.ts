// scripts/md-block.mjs: the marked blocks of BENCHMARKS.md that `npm run bench` and `npm run bench:heads` each
// rewrite without touching the other's.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { blockMarkers, replaceBlock, writeBlock } from '../scripts/md-block.mjs';
import { tempDir } from './fixtures/cli-helpers.js';

describe('marked Markdown blocks', () => {
  it('replaces only its own block, and appends a missing one', () => {
    expect(blockMarkers('bench:heads:resnet56')).toEqual({
      start: '<!-- bench:heads:resnet56:start -->',
      end: '<!-- bench:heads:resnet56:end -->',
    });
    let text = '# Benchmarks\n\nIntro.\n';
    text = replaceBlock(text, 'bench:results', 'results v1');
    expect(text).toBe(
      '# Benchmarks\n\nIntro.\n\n<!-- bench:results:start -->\nresults v1\n<!-- bench:results:end -->\n',
    );
    text = replaceBlock(text, 'bench:heads:resnet56', 'heads v1');
    text = replaceBlock(text, 'bench:results', 'results v2');
    text = replaceBlock(text, 'bench:heads:resnet56', 'heads v2');
    expect(text).toBe(
      '# Benchmarks\n\nIntro.\n\n<!-- bench:results:start -->\nresults v2\n<!-- bench:results:end -->\n\n' +
        '<!-- bench:heads:resnet56:start -->\nheads v2\n<!-- bench:heads:resnet56:end -->\n',
    );
    // resnet20's block is another block, not a prefix match of resnet56's
    expect(replaceBlock(text, 'bench:heads:resnet20', 'r20')).toContain('heads v2');
    expect(replaceBlock(text, 'bench:heads:resnet20', 'r20').match(/:start -->/g)).toHaveLength(3);
  });

  it('writes a new file under a title, then keeps the rest of it', async () => {
    const file = path.join(tempDir('selfxit-md-'), 'BENCHMARKS.md');
    await writeBlock(file, 'bench:results', 'one');
    expect(fs.readFileSync(file, 'utf8')).toBe(
      '# Benchmarks\n\n<!-- bench:results:start -->\none\n<!-- bench:results:end -->\n',
    );
    fs.appendFileSync(file, '\nHand-written notes.\n');
    await writeBlock(file, 'bench:results', 'two');
    expect(fs.readFileSync(file, 'utf8')).toBe(
      '# Benchmarks\n\n<!-- bench:results:start -->\ntwo\n<!-- bench:results:end -->\n\nHand-written notes.\n',
    );
  });
});
