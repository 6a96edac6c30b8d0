// CLI progress output on stderr: one updating line on a TTY, plain throttled lines otherwise.
import type { PrepareProgress } from '../calibrate/progress.js';

export interface ProgressPrinter {
  (event: PrepareProgress): void;
  /** Ends the updating line (call before printing anything else). */
  done(): void;
}

/**
 * Progress printer writing through `write` (default stderr). `tty` (default: stderr is a terminal): one
 * updating line; otherwise one plain line per stage and every 10 %.
 */
export function createProgressPrinter(
  write: (text: string) => void = (t) => void process.stderr.write(t),
  tty = process.stderr.isTTY === true,
): ProgressPrinter {
  const stream = { write };
  let lastStage = '';
  let lastDecile = -1;
  let open = false;
  const print = ((e: PrepareProgress) => {
    const pct = e.total > 0 ? Math.floor((100 * e.done) / e.total) : 100;
    const line = `[${e.stage}] ${e.done}/${e.total} (${pct}%)${e.detail ? ` ${e.detail}` : ''}`;
    if (tty) {
      stream.write(`\r\x1b[2K${line}`);
      open = true;
      if (e.done >= e.total) {
        stream.write('\n');
        open = false;
      }
      return;
    }
    const decile = Math.floor(pct / 10);
    if (e.stage !== lastStage || decile !== lastDecile) {
      stream.write(`${line}\n`);
      lastStage = e.stage;
      lastDecile = decile;
    }
  }) as ProgressPrinter;
  print.done = () => {
    if (open) stream.write('\n');
    open = false;
  };
  return print;
}
