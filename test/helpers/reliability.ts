// Helpers for test/reliability: the real trainwatch process started through a wrapper command
// (another user, a new user namespace), what the kernel says about it (/proc/<pid>/fd and
// /proc/<pid>/stat), the trainer's way of writing, and a continuous writer in its own process.
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, freePort, pyJson, requireBinary, scrape, waitFor } from './proc.js';

type T = { after(fn: () => unknown): void; diagnostic(s: string): void };

/** Per test: how to kill what it started (so that its temp dir is removed only after that). */
const killers = new WeakMap<object, Array<() => unknown>>();
function onKill(t: T, kill: () => unknown): void {
  if (!killers.has(t)) killers.set(t, []);
  killers.get(t)!.push(kill);
  t.after(kill);
}

/**
 * A temp directory (mode 0755, so that an unprivileged trainwatch can read it). Removed after
 * the test, once every process the test started through these helpers is dead; never throws,
 * so that no other teardown is skipped.
 */
export function scratch(t: T, prefix = 'tw-rel-'): string {
  const path = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(path, 0o755);
  t.after(async () => {
    for (const kill of killers.get(t) ?? []) await kill();
    try {
      rmSync(path, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
    } catch (e) {
      t.diagnostic(`cleanup of ${path}: ${(e as Error).message}`);
    }
  });
  return path;
}

/** A running trainwatch, with its pid (the node process itself, whatever wrapper started it). */
export interface Tw {
  proc: ChildProcess;
  pid: number;
  url: string;
  logs(): string;
  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`; resolves with the exit code. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | null>;
  /** SIGKILL: no shutdown code runs. */
  kill9(): Promise<void>;
}

/**
 * Starts the real CLI on a free port, optionally through `wrap` (a command that ends by exec'ing
 * its arguments, so the pid we get is node's: setpriv, unshare, `sh -c '…; exec "$@"'`), and
 * registers its stop with `t.after` so it is killed on failure too.
 */
export async function startTw(
  t: T,
  args: string[],
  opts: { wrap?: string[]; env?: Record<string, string>; /** where to run it from (repoForAnyUser() for another user) */ repo?: string } = {},
): Promise<Tw> {
  const port = await freePort();
  const argv = [
    process.execPath,
    opts.repo ? join(opts.repo, 'bin/trainwatch.js') : BIN,
    '--web.listen-address',
    `127.0.0.1:${port}`,
    '--log.level',
    'debug',
    ...args,
  ];
  const full = [...(opts.wrap ?? []), ...argv];
  const proc = spawn(full[0], full.slice(1), { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code, sig) => r(code ?? (sig ? -1 : null))));
  const alive = () => proc.exitCode === null && proc.signalCode === null;
  const stop = async (signal: NodeJS.Signals = 'SIGTERM', graceMs = 6000) => {
    if (alive()) proc.kill(signal);
    const timer = setTimeout(() => alive() && proc.kill('SIGKILL'), graceMs);
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
  onKill(t, () => stop('SIGKILL'));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => {
    if (!alive()) throw new Error(`trainwatch exited with ${proc.exitCode ?? proc.signalCode}`);
    return (await fetch(`${url}/readyz`)).ok;
  }, 'trainwatch to become ready').catch((e) => {
    proc.kill('SIGKILL');
    throw new Error(`${(e as Error).message}\n--- trainwatch output ---\n${out}`);
  });
  return {
    proc,
    pid: proc.pid!,
    url,
    logs: () => out,
    stop,
    kill9: async () => {
      if (alive()) proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** One heartbeat record, as the trainer writes it (Python json.dumps spelling). */
export function record(rank: number, step: number, msg = 'progress', extra: Record<string, unknown> = {}): string {
  const ts = Date.now() / 1000;
  return pyJson({ ts, iso: new Date(ts * 1000).toISOString(), pid: 4242, rank, step, msg, toks_per_s: 1000, loss: 2.5, ...extra }) + '\n';
}

/** The trainer's way: open in append mode, write one record, close. */
export function beat(dir: string, rank: number, step: number, msg = 'progress', extra: Record<string, unknown> = {}): void {
  appendFileSync(join(dir, `heartbeat_rank${rank}.jsonl`), record(rank, step, msg, extra));
}

/** trainwatch_records_total for one series (0 when the series is absent). */
export function records(m: Map<string, number>, run: string, rank: number, msg = 'progress'): number {
  return m.get(`trainwatch_records_total{run="${run}",rank="${rank}",msg="${msg}"}`) ?? 0;
}

/** trainwatch_step for one rank (undefined when absent). */
export function step(m: Map<string, number>, run: string, rank: number): number | undefined {
  return m.get(`trainwatch_step{run="${run}",rank="${rank}"}`);
}

/** trainwatch_parse_errors_total{reason}. */
export function parseErrors(m: Map<string, number>, reason: string): number {
  return m.get(`trainwatch_parse_errors_total{reason="${reason}"}`) ?? 0;
}

/** Every parse error counter that is not zero, as reason → count. */
export function nonZeroParseErrors(m: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of m) {
    const r = /^trainwatch_parse_errors_total\{reason="([^"]+)"\}$/.exec(k);
    if (r && v !== 0) out[r[1]] = v;
  }
  return out;
}

/** Scrapes until `pred` holds; returns that scrape. */
export async function scrapeUntil(url: string, pred: (m: Map<string, number>) => boolean, what: string, timeoutMs = 30_000): Promise<Map<string, number>> {
  return waitFor(
    async () => {
      const m = await scrape(url);
      return pred(m) ? m : undefined;
    },
    what,
    timeoutMs,
  );
}

/** The run that sweepsPassed writes into. */
export const SWEEP_SENTINEL = 'zz-sweep-sentinel';

/**
 * Returns once at least `n` more sweeps of a trainwatch have run. It must watch `root` with
 * --watch.crash-detect 1: only a sweep looks at trainer pids, so a sentinel run under `root`
 * whose "trainer" is a process of ours is first seen up; we kill it, and the sweep that sees it
 * down started after that. The sentinel run (SWEEP_SENTINEL) reports trainer_crash.
 */
export async function sweepsPassed(url: string, root: string, n = 2): Promise<void> {
  const dir = join(root, SWEEP_SENTINEL);
  mkdirSync(dir, { recursive: true });
  const up = (m: Map<string, number>) => m.get(`trainwatch_trainer_up{run="${SWEEP_SENTINEL}",rank="0"}`);
  for (let i = 0; i < n; i++) {
    const p = spawn('sleep', ['600'], { stdio: 'ignore' });
    const gone = new Promise((r) => p.on('exit', r));
    try {
      appendFileSync(join(dir, 'heartbeat_rank0.jsonl'), record(0, i + 1, 'beat', { pid: p.pid }));
      await scrapeUntil(url, (m) => up(m) === 1, `a sweep to see the sentinel trainer ${p.pid} up (is --watch.crash-detect 1 on?)`, 30_000);
    } finally {
      p.kill('SIGKILL');
      await gone;
    }
    await scrapeUntil(url, (m) => up(m) === 0, `a sweep to see the sentinel trainer ${p.pid} gone`, 30_000);
  }
}

/** The process still serves: /healthz answers 200 and /metrics parses. */
export async function assertServing(tw: Tw): Promise<void> {
  const h = await fetch(`${tw.url}/healthz`);
  if (h.status !== 200) throw new Error(`/healthz answered ${h.status}`);
  const m = await scrape(tw.url);
  if (!m.has('trainwatch_runs_watched')) throw new Error('/metrics lacks trainwatch_runs_watched');
  if (/unexpected error|internal error/.test(tw.logs())) throw new Error(`trainwatch logged an unexpected error:\n${tw.logs()}`);
}

/** The targets of the process's open file descriptors (readlink of /proc/<pid>/fd/*). */
export function fdTargets(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.push(readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      // closed while we looked
    }
  }
  return out;
}

/** User + system CPU time of a process so far, in seconds (/proc/<pid>/stat utime + stime). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the ")" closing comm: state is field 3, utime 14, stime 15 (1-based).
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[14 - 3]) + Number(f[15 - 3])) / 100; // USER_HZ is 100 on Linux
}

/** A writer in its own process that appends records the trainer's way, one open-append-close each. */
export interface Writer {
  proc: ChildProcess;
  /** resolves with the number of records written, once it exits */
  done: Promise<number>;
  /** asks it to stop after the record it is writing; resolves with the number written */
  stop(): Promise<number>;
  /** after it exited: how many records went into a file that was no longer at the path */
  late(): number;
  kill(): Promise<unknown>;
}

const WRITER_PY = String.raw`
import json, os, signal, sys, time
path, rank, first, n, per_s, gap_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
gap = 1.0 / per_s
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
t0 = time.time()
written = 0
late_writes = 0
for i in range(n):
    if stop:
        break
    s = first + i
    rec = {"ts": time.time(), "iso": "", "pid": 4242, "rank": rank, "step": s, "msg": "progress", "loss": 2.5, "toks_per_s": 1000.0, "pad": "x" * (s % 37)}
    with open(path, "a") as f:
        if gap_s > 0:
            time.sleep(gap_s)  # another thread holds the GIL between open and write
        f.write(json.dumps(rec) + "\n")
        f.flush()
        try:
            if os.fstat(f.fileno()).st_ino != os.stat(path).st_ino:
                late_writes += 1  # written into a file that had been rotated away meanwhile
        except FileNotFoundError:
            late_writes += 1
    written += 1
    late = t0 + (i + 1) * gap - time.time()
    if late > 0:
        time.sleep(late)
print(written, late_writes, flush=True)
`;

/**
 * Starts a Python writer: up to `n` records of `rank` with steps first.., at `perS` records per
 * second; `gapMs` between its open and its write (as when another thread takes the GIL there).
 */
export function startWriter(t: T, path: string, rank: number, first: number, n: number, perS: number, gapMs = 0): Writer {
  requireBinary('python3', 'python3');
  const proc = spawn('python3', ['-c', WRITER_PY, path, String(rank), String(first), String(n), String(perS), String(gapMs / 1000)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const done = new Promise<number>((res, rej) =>
    proc.on('exit', (code) => (code === 0 ? res(Number(out.trim().split(' ')[0])) : rej(new Error(`writer exited with ${code}: ${out}`)))),
  );
  done.catch(() => undefined);
  const kill = () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    return done.catch(() => undefined);
  };
  onKill(t, kill);
  const stop = () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    return done;
  };
  return { proc, done, stop, kill, late: () => Number(out.trim().split(' ')[1]) };
}

const FIFO_SWAP_PY = String.raw`
import os, sys, time
path, n, ts = sys.argv[1], int(sys.argv[2]), sys.argv[3]
d = os.path.dirname(path)
for i in range(n):
    fifo = os.path.join(d, 'tmp.fifo')
    os.mkfifo(fifo)
    os.rename(fifo, path)
    reg = os.path.join(d, 'tmp.reg')
    with open(reg, 'w') as f:
        f.write('{"ts": %s, "rank": 0, "step": %d, "msg": "progress"}\n' % (repr(time.time()) if ts == 'now' else ts, i))
    os.rename(reg, path)
`;

/**
 * Starts a rotation loop in another process that renames a FIFO, then a regular file holding one
 * progress record (rank 0, `ts`: a fixed number, or the time of writing when 'now'), over `path`,
 * `n` times each and as fast as it can, so that FIFOs land between a stat and an open (issue 11
 * row 1). `done` resolves with its exit code. The caller kills it (startFifoSwapper: at the end of the test).
 */
export function spawnFifoSwapper(path: string, n: number, ts: number | 'now'): { proc: ChildProcess; done: Promise<number> } {
  const proc = spawn('python3', ['-c', FIFO_SWAP_PY, path, String(n), String(ts)], { stdio: ['ignore', 'ignore', 'inherit'] });
  return { proc, done: new Promise<number>((r) => proc.on('exit', (code) => r(code ?? -1))) };
}

/** spawnFifoSwapper, killed at the end of the test. */
export function startFifoSwapper(t: T, path: string, n: number, ts: number | 'now'): { proc: ChildProcess; done: Promise<number> } {
  requireBinary('python3', 'python3');
  const swapper = spawnFifoSwapper(path, n, ts);
  killAtEnd(t, swapper.proc);
  return swapper;
}

/** Registers a child process of the test to be killed at its end (before its temp dir goes). */
export function killAtEnd(t: T, proc: ChildProcess): void {
  onKill(t, () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
}

/** Sleeps. */
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
