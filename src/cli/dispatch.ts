// CLI plumbing: command modules, the dispatcher, exit codes (0 ok, 1 SelfxitError, 2 usage) and error printing.
import { isSelfxitError } from '../errors.js';

/** Where a command writes. Tests pass their own to capture output. */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** Whether stderr is a terminal (progress as one updating line). Default: process.stderr's, for {@link processIo};
   * false for any other. */
  readonly tty?: boolean;
}

/** One subcommand. Add a module exporting one of these and register it in src/cli/main.ts. */
export interface CliCommand {
  readonly name: string;
  /** One line for `selfxit --help`. */
  readonly summary: string;
  /** Full text for `selfxit <name> --help`. */
  readonly help: string;
  /** Runs with the arguments after the command name; resolves to the exit code (default 0). */
  run(argv: readonly string[], io: CliIo): Promise<number | void>;
}

/** A bad command line: printed with a hint, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_USAGE = 2;

export const processIo: CliIo = {
  stdout: (t) => void process.stdout.write(t),
  stderr: (t) => void process.stderr.write(t),
};

function topHelp(commands: Readonly<Record<string, CliCommand>>): string {
  const names = Object.keys(commands);
  const w = Math.max(...names.map((n) => n.length));
  return [
    'selfxit — unsupervised early exits for ONNX image classifiers',
    '',
    'Usage: selfxit <command> [options]',
    '',
    'Commands:',
    ...names.map((n) => `  ${n.padEnd(w)}  ${commands[n]!.summary}`),
    '',
    "Run `selfxit <command> --help` for a command's options.",
    '',
  ].join('\n');
}

/** Parses `argv` (without node and script), runs the command, prints errors; resolves to the exit code. */
export async function runCli(
  argv: readonly string[],
  commands: Readonly<Record<string, CliCommand>>,
  io: CliIo = processIo,
): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    (name === undefined ? io.stderr : io.stdout)(topHelp(commands));
    return name === undefined ? EXIT_USAGE : EXIT_OK;
  }
  const cmd = Object.prototype.hasOwnProperty.call(commands, name) ? commands[name] : undefined;
  if (!cmd) {
    io.stderr(`error: unknown command "${name}"\n\n${topHelp(commands)}`);
    return EXIT_USAGE;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout(cmd.help.endsWith('\n') ? cmd.help : `${cmd.help}\n`);
    return EXIT_OK;
  }
  try {
    return (await cmd.run(rest, io)) ?? EXIT_OK;
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr(`error: ${e.message}\nRun \`selfxit ${cmd.name} --help\` for usage.\n`);
      return EXIT_USAGE;
    }
    if (isSelfxitError(e)) {
      io.stderr(`error [${e.code}]: ${e.message}\n`);
      return EXIT_ERROR;
    }
    const err = e instanceof Error ? e : new Error(String(e));
    io.stderr(`error [INTERNAL]: ${err.message}\n${err.stack ?? ''}\n`);
    return EXIT_ERROR;
  }
}
