// `trainwatch status`: every run's state in a terminal or an ssh session, with a scriptable
// exit status. It asks a running trainwatch (--url, or one on the listen address that watches
// the directories asked about), or else reads --dir/--root once by itself with the same
// parsing, detection and lifecycle code, without acting: nothing is written into run
// directories, not even the audit log. The --json format is documented in docs/status.md.
import type { Config } from './config/settings.js';
import { applyDefaultDir, NOTHING_TO_WATCH } from './config/load.js';
import { makeLogger } from './log.js';
import { askPeer, covers, urlOf, watchedPaths } from './http/peer.js';
import { statusJson } from './http/status.js';
import { Watcher } from './watch/watcher.js';

/** The /api/status document (a running instance's, or one built here). */
type StatusDoc = ReturnType<typeof statusJson>;

/** States that count as healthy for the exit status. */
const HEALTHY: ReadonlySet<string> = new Set(['starting', 'training', 'finished', 'expired']);

/** The --json format version; bumped only when a field changes meaning or goes away. */
export const STATUS_FORMAT = 1;

/** One rank in `trainwatch status --json`. */
export interface StatusRank {
  rank: number;
  role: string;
  age_s: number | null;
  step: number | null;
  tokens_per_s: number | null;
  anomalies: string[];
}

/** One run in `trainwatch status --json`. */
export interface StatusRun {
  run: string;
  dir: string;
  state: string;
  reason: string;
  healthy: boolean;
  primary: { kind: string; severity: string; rank: number; message: string } | null;
  halt: { kind: string | null; by: string } | null;
  liveness: string;
  attempt: number;
  /** the threshold profile it is judged by, how it was chosen, and whether it auto-halts */
  profile: { name: string; via: string; halt: boolean };
  ranks: StatusRank[];
}

/** `trainwatch status --json`. */
export interface StatusOutput {
  format: number;
  source: string;
  version: string;
  now: number;
  exit: number;
  runs: StatusRun[];
}

const orNull = <T>(v: T | undefined): T | null => (v === undefined ? null : v);

/** The stable --json form of a status document. */
export function statusOutput(doc: StatusDoc, source: string): StatusOutput {
  const runs: StatusRun[] = doc.runs.map((r) => ({
    run: r.run,
    dir: r.dir,
    state: r.state,
    reason: r.reason ?? '',
    healthy: HEALTHY.has(r.state),
    primary: r.primary ? { kind: r.primary.kind, severity: r.primary.severity, rank: r.primary.rank, message: r.primary.message } : null,
    halt: r.halt ? { kind: orNull(r.halt.kind), by: r.halt.by } : null,
    liveness: r.liveness,
    attempt: r.attempt,
    // An older instance (before profiles) sends none: it judged every run by one set, the default.
    profile: r.profile ?? { name: 'default', via: 'default', halt: doc.halt },
    ranks: (r.ranks ?? []).map((k) => ({
      rank: k.rank,
      role: k.role,
      age_s: orNull(k.age),
      step: orNull(k.step),
      tokens_per_s: orNull(k.toksPerS),
      anomalies: k.anomalies,
    })),
  }));
  return { format: STATUS_FORMAT, source, version: doc.version, now: doc.now, exit: runs.every((r) => r.healthy) ? 0 : 1, runs };
}

/** Terminal width the table keeps to. */
const WIDTH = 80;

function age(s: number | null): string {
  if (s === null) return '-';
  return s < 120 ? `${s.toFixed(1)}s` : s < 7200 ? `${(s / 60).toFixed(1)}m` : s < 172800 ? `${(s / 3600).toFixed(1)}h` : `${(s / 86400).toFixed(1)}d`;
}

function rate(v: number | null): string {
  if (v === null) return '-';
  return Math.abs(v) >= 1e6 ? `${(v / 1e6).toFixed(1)}M` : Math.abs(v) >= 1e4 ? `${(v / 1e3).toFixed(1)}k` : String(Math.round(v));
}

const fit = (s: string, n: number) => (s.length > n ? s.slice(0, n - 1) + '~' : s.padEnd(n));

/** Splits a line at spaces so that each piece fits WIDTH; continuation lines start with `indent`. */
function wrap(line: string, indent: string): string[] {
  const out: string[] = [];
  let rest = line;
  while (rest.length > WIDTH) {
    const cut = rest.lastIndexOf(' ', WIDTH);
    if (cut <= indent.length) break;
    out.push(rest.slice(0, cut));
    rest = indent + rest.slice(cut + 1);
  }
  out.push(rest);
  return out;
}

/** The compact table: a line per run, a line per rank, and why; no line is wider than 80 columns. */
export function statusTable(o: StatusOutput): string {
  const lines: string[] = [];
  // 20 + 14 + 22 + 21 columns and three spaces: the longest state and kind names fit.
  lines.push(`${fit('RUN', 20)} ${fit('STATE', 14)} ${fit('PRIMARY', 22)} .HALT`);
  // Profiles are named only where some run is on one: otherwise every run is on the default.
  const profiled = o.runs.some((r) => r.profile.name !== 'default');
  for (const r of o.runs) {
    const primary = r.primary ? `${r.primary.kind} r${r.primary.rank}` : '-';
    // Who wrote .HALT is in the why line (the lifecycle's reason).
    const halt = r.halt ? (r.halt.kind ?? 'yes') : '-';
    lines.push(`${fit(r.run, 20)} ${fit(r.state, 14)} ${fit(primary, 22)} ${halt}`);
    for (const k of r.ranks) {
      const flags = k.anomalies.length > 0 ? `  ! ${k.anomalies.join(',')}` : '';
      lines.push(
        `  rank ${String(k.rank).padEnd(4)} ${fit(k.role, 9)} age ${age(k.age_s).padStart(6)}  step ${(k.step === null ? '-' : String(k.step)).padStart(9)}  tok/s ${rate(k.tokens_per_s).padStart(6)}${flags}`,
      );
    }
    lines.push(...wrap(`  why: ${r.reason}`, '       '));
    if (profiled) lines.push(`  profile: ${fit(r.profile.name, 40).trimEnd()} (${r.profile.via}${r.profile.halt ? '' : ', no auto-halt'})`);
  }
  if (o.runs.length === 0) lines.push('(no runs: no heartbeat files found)');
  lines.push(`${o.runs.filter((r) => !r.healthy).length} of ${o.runs.length} run${o.runs.length === 1 ? '' : 's'} need attention; source: ${o.source}`);
  return lines.map((l) => (l.length > WIDTH ? l.slice(0, WIDTH - 1) + '~' : l)).join('\n') + '\n';
}

/** Options of the status command. */
export interface StatusOptions {
  json: boolean;
  url?: string;
}

/** Reads the given directories once, judges every run as trainwatch would, and stops. Writes nothing. */
export async function readOnce(base: Config): Promise<StatusDoc> {
  // alertmanager mode and no escalation: the evaluator never reaches a control-file write; readOnly keeps the audit log untouched too.
  const config: Config = { ...base, mode: 'alertmanager', 'watch.escalate-s': 0, 'watch.auto-clear-halt': false, 'tail.parse-thread-bytes': 0 };
  const w = new Watcher(config, makeLogger('error', config['log.format']), { readOnly: true });
  try {
    await w.start();
    return statusJson(w, w.now(), '');
  } finally {
    await w.stop();
  }
}

/** Runs `trainwatch status`; returns the exit status (0 healthy, 1 attention, 2 usage or no status). */
export async function runStatus(config: Config, opts: StatusOptions, version: string, out = process.stdout, err = process.stderr): Promise<number> {
  let doc: StatusDoc | undefined;
  let source = 'files';
  if (opts.url !== undefined) {
    const url = opts.url.replace(/\/+$/, '');
    doc = (await askPeer(url)) as StatusDoc | undefined;
    if (!doc) {
      err.write(
        `trainwatch status: error: no trainwatch answered at ${url}/api/status. Check --url (e.g. http://127.0.0.1:9465), or drop it and pass --dir/--root to read the files directly\n`,
      );
      return 2;
    }
    source = url;
  } else {
    const given = config.dir.length > 0 || config.root.length > 0;
    // A running instance knows more (timers, pids seen alive, its audit memory): ask it first.
    const url = urlOf(config['web.listen-address']);
    const peer = (await askPeer(url)) as StatusDoc | undefined;
    if (peer && (!given || covers(peer, watchedPaths(config)))) {
      doc = peer;
      source = url;
    } else {
      applyDefaultDir(config);
      if (config.dir.length === 0 && config.root.length === 0) {
        err.write(
          `trainwatch status: error: no trainwatch answered at ${url}, and ${NOTHING_TO_WATCH.replace(/, or try: trainwatch demo$/, '')}; or pass --url\n`,
        );
        return 2;
      }
      doc = await readOnce(config);
      doc.version = version;
    }
  }
  const o = statusOutput(doc, source);
  out.write(opts.json ? JSON.stringify(o, null, 2) + '\n' : statusTable(o));
  return o.exit;
}
