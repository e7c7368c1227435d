// Command line → (flag values, command). Flags and their help come from SETTINGS.
import { Command, Option } from 'commander';
import { SETTINGS, settingFor, type Setting } from './config/settings.js';

/** What the command line asked for. */
export interface CliResult {
  command: 'run' | 'demo' | 'status' | 'rules';
  flags: Map<string, unknown>;
  demo?: { fault: string; keep: boolean };
  status?: { json: boolean; url?: string };
  rules?: { runbookBaseUrl?: string; jobMatcher?: string };
}

/** Removes `--name` (with a value: `--name v` or `--name=v`) from args; returns its value, true, or undefined. */
function takeOwn(args: string[], name: string, withValue: boolean): string | true | undefined {
  let got: string | true | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === `--${name}`) {
      if (withValue && (args[i + 1] === undefined || args[i + 1].startsWith('--'))) throw new Error(`--${name} needs a value`);
      got = withValue ? args[i + 1] : true;
      args.splice(i, withValue ? 2 : 1);
      i--;
    } else if (withValue && a.startsWith(`--${name}=`)) {
      got = a.slice(name.length + 3);
      args.splice(i, 1);
      i--;
    }
  }
  return got;
}

function describe(s: Setting): string {
  const parts = [s.help];
  const extra: string[] = [];
  if (s.env) extra.push(`env ${s.env}`);
  const d = s.default;
  if (d !== undefined && !(Array.isArray(d) && d.length === 0)) extra.push(`default ${typeof d === 'boolean' ? (d ? '1' : '0') : String(d)}`);
  if (s.min !== undefined && s.max !== undefined) extra.push(`${s.min}..${s.max}`);
  if (extra.length) parts.push(`(${extra.join('; ')})`);
  return parts.join(' ');
}

const GROUP_ORDER: Setting['group'][] = ['Watch', 'Detection (NSA_WATCH_*)', 'Actions', 'Notifications', 'Web', 'Tailing', 'Logging'];

/** Builds the commander program; exported so --help text can be tested and documented. */
export function buildProgram(version: string): Command {
  const program = new Command('trainwatch');
  program
    .description(
      'Watchdog and Prometheus exporter for ML training runs: tails heartbeat_rank<N>.jsonl files, serves /metrics and a status page, and writes .anomaly_type and .HALT when a run hangs, diverges or stops learning.',
    )
    .version(version, '--version', 'Print the version and exit.')
    .helpOption('-h, --help', 'Show this help.')
    .showHelpAfterError('(run trainwatch --help for every flag)')
    .configureHelp({ sortOptions: false });
  for (const s of [...(SETTINGS as readonly Setting[])].sort((a, b) => GROUP_ORDER.indexOf(a.group) - GROUP_ORDER.indexOf(b.group))) {
    let flag: string;
    if (s.key === 'halt') flag = `--halt <0|1>`;
    else if (s.type === 'bool') flag = `--${s.key} [0|1]`;
    else flag = `--${s.key} <${s.arg ?? (s.type === 'enum' ? s.choices!.join('|') : s.type === 'int' || s.type === 'number' ? 'n' : 'value')}>`;
    const opt = new Option(flag, describe(s)).helpGroup(`${s.group}:`);
    if (s.type === 'list') opt.argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]);
    program.addOption(opt);
    for (const a of s.aliases ?? [])
      program.addOption(new Option(flag.replace(`--${s.key}`, `--${a}`), `Same as --${s.key} (the original watchdog's flag).`).helpGroup(`${s.group}:`));
  }
  program.addHelpText(
    'after',
    `
Commands:
  trainwatch [flags]          watch runs (default)
  trainwatch demo [--fault K] [--keep]
                              start a simulated trainer, inject a fault, watch trainwatch catch it and
                              the trainer stop (K: nonfinite_loss (default), throughput_flatline,
                              heartbeat_stall, watchdog_dump, zero_grad, loss_flatline, gate_collapse;
                              --keep: keep serving the status page afterwards)
  trainwatch status [--json] [--url URL] [--dir D | --root R]
                              every run's state, primary anomaly, .HALT and per-rank heartbeat age,
                              step and tokens/s, from a running trainwatch (--url, or the one on
                              --web.listen-address) or else read once from --dir/--root, writing
                              nothing. Exit 0 all healthy, 1 a run needs attention, 2 usage error.
                              --json: the stable format of docs/status.md
  trainwatch rules [--runbook-base-url URL] [--job-matcher M]
                              print the Prometheus alert rules (alerts/trainwatch.rules.yml) to stdout.
                              URL: where every runbook_url points, as URL#<alert> (default
                              http://{{ $labels.instance }}/docs/runbook: the runbook this trainwatch
                              serves); M: TrainwatchDown's matcher on up (default job=~".*trainwatch.*")

Control files written into a run directory:
  .anomaly_type   "<anomaly>\\n" once per episode (heartbeat_stall, throughput_flatline, loss_flatline,
                  zero_grad, fetch_stall, gate_collapse, nonfinite_loss, straggler, trainer_crash)
  .HALT           "halt: <anomaly>\\n", only with --halt 1 / NSA_WATCH_HALT=1; never overwritten
  .anomaly.json   details; .trainwatch-audit.jsonl: every action, one JSON line each

Examples:
  trainwatch --dir artifacts/train_showcase --halt 1     # the original _watchdog.py, drop-in
  trainwatch --root artifacts --web.listen-address=:9465 # every run under artifacts/
  NSA_WATCH_HEARTBEAT_STALL_S=120 NSA_WATCH_FLATLINE_N=3 trainwatch --dir run --halt 1
Precedence: flags > environment > --config file > defaults. Docs: README.md, docs/configuration.md.`,
  );
  return program;
}

/** Parses argv (without node and script). Throws commander errors for bad flags. */
export function parseCli(argv: string[], version: string): CliResult {
  const args = [...argv];
  if (args[0] === 'rules') {
    args.shift();
    const runbookBaseUrl = takeOwn(args, 'runbook-base-url', true);
    const jobMatcher = takeOwn(args, 'job-matcher', true);
    if (args.length > 0) throw new Error(`trainwatch rules: unexpected argument '${args[0]}'; it takes only --runbook-base-url and --job-matcher`);
    return {
      command: 'rules',
      flags: new Map(),
      rules: { runbookBaseUrl: runbookBaseUrl as string | undefined, jobMatcher: jobMatcher as string | undefined },
    };
  }
  let command: CliResult['command'] = 'run';
  const demo = { fault: 'nonfinite_loss', keep: false };
  let status: CliResult['status'];
  if (args[0] === 'demo') {
    command = 'demo';
    args.shift();
    const fault = takeOwn(args, 'fault', true);
    if (typeof fault === 'string') demo.fault = fault;
    demo.keep = takeOwn(args, 'keep', false) === true;
  } else if (args[0] === 'status') {
    command = 'status';
    args.shift();
    const url = takeOwn(args, 'url', true);
    status = { json: takeOwn(args, 'json', false) === true, url: typeof url === 'string' ? url : undefined };
  }
  const program = buildProgram(version);
  program.exitOverride();
  program.parse(args, { from: 'user' });
  if (program.args.length > 0) throw new Error(`unexpected argument '${program.args[0]}'. Did you mean --dir ${program.args[0]}?`);
  const opts: Record<string, unknown> = program.opts();
  const flags = new Map<string, unknown>();
  const givenAs = new Map<string, string>();
  for (const opt of program.options) {
    const name = opt.long?.replace(/^--/, '');
    if (!name || name === 'version' || name === 'help') continue;
    const v = opts[opt.attributeName()];
    if (v === undefined) continue;
    // An alias sets its setting's key; giving both spellings is ambiguous.
    const key = settingFor(name)!.key;
    if (givenAs.has(key)) throw new Error(`--${givenAs.get(key)} and --${name} are the same setting; give only one`);
    givenAs.set(key, name);
    flags.set(key, v);
  }
  return { command, flags, demo: command === 'demo' ? demo : undefined, status };
}
