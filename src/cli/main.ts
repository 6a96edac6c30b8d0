// selfxit CLI entry: the command registry and process exit code. Bundled to dist/cli.js; run via bin/selfxit.js.
import type { CliCommand } from './dispatch.js';
import { runCli } from './dispatch.js';
import { inspectCommand } from './inspect.js';
import { splitCommand } from './split.js';
import { prepareCommand } from './prepare.js';
import { evalCommand } from './eval.js';
import { reportCommand } from './report.js';

/** Subcommands by name. To add one: write src/cli/<name>.ts exporting a CliCommand and list it here. */
export const commands: Readonly<Record<string, CliCommand>> = {
  inspect: inspectCommand,
  split: splitCommand,
  prepare: prepareCommand,
  eval: evalCommand,
  report: reportCommand,
};

process.exitCode = await runCli(process.argv.slice(2), commands);
