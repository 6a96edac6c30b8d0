// `selfxit report` option checks: --limit and --seed are whole numbers (as eval's), refused before any work.
import { describe, expect, it } from 'vitest';
import { reportCommand } from '../src/cli/report.js';
import { cliWith } from './fixtures/cli-helpers.js';

const cli = cliWith({ report: reportCommand });

describe('selfxit report', () => {
  it('refuses a --limit that is not an integer >= 1 and a --seed that is not an integer, before reading the bundle', async () => {
    for (const args of [['--limit', '0'], ['--limit=-3'], ['--limit', '1.5'], ['--seed', '1.5']]) {
      // no such bundle folder: the option is refused first
      const r = await cli('report', '/nonexistent/bundle', '--samples', '/nonexistent/samples', ...args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(
        new RegExp(`^error \\[INVALID_ARGUMENT\\]: ${args[0]!.split('=')[0]} must be an integer`),
      );
    }
  });
});
