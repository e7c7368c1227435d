// Shared pieces of the benchmarks: realistic heartbeat lines, result rows, process probes.
// Benchmarks print human text first and one JSON result row as their LAST stdout line;
// scripts/bench.mjs collects those rows into a table. Nothing here asserts: figures only.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN, freePort } from '../test/helpers/proc.js';

/** One line of the benchmark table. */
export interface Row {
  name: string;
  /** the headline figure, human-readable */
  figure: string;
  target: string;
  verdict: 'met' | 'MISSED' | 'ERROR';
  /** raw numbers, for whoever wants more than the table */
  data: Record<string, unknown>;
}

/** Prints the result row as the last stdout line. */
export function emit(row: Row): void {
  process.stdout.write(JSON.stringify(row) + '\n');
}

/** Runs a benchmark's main; an exception still yields a row (verdict ERROR). */
export function runMain(name: string, target: string, main: () => Promise<Row>): void {
  main().then(
    (row) => {
      emit(row);
      process.exit(0);
    },
    (e: Error) => {
      process.stderr.write(`${name}: ${e.stack ?? e.message}\n`);
      emit({ name, figure: `error: ${e.message.split('\n')[0]}`, target, verdict: 'ERROR', data: {} });
      process.exit(1);
    },
  );
}

/** Human output (stdout, before the row). */
export function say(s: string): void {
  process.stdout.write(s + '\n');
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Wall clock in seconds with sub-millisecond resolution (comparable with record ts). */
export function wallS(): number {
  return (performance.timeOrigin + performance.now()) / 1000;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Nearest-rank percentile, p in [0, 100]. */
export function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

export function fmtRate(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : `${(n / 1e3).toFixed(0)} k`;
}

/** A temp directory under the OS temp dir; remove with cleanup(). */
export function benchTmp(prefix: string): { path: string; cleanup(): void } {
  const path = mkdtempSync(join(tmpdir(), `tw-bench-${prefix}-`));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

// ---------------------------------------------------------------- heartbeat records

/** Python json.dumps (default separators ", " and ": "; NaN/Infinity as bare tokens). */
export function pyDumps(rec: Record<string, unknown>): string {
  const parts: string[] = [];
  for (const k in rec) parts.push(`"${k}": ${pyValue(rec[k])}`);
  return `{${parts.join(', ')}}`;
}

function pyValue(v: unknown): string {
  if (typeof v === 'number') {
    if (Number.isNaN(v)) return 'NaN';
    if (v === Infinity) return 'Infinity';
    if (v === -Infinity) return '-Infinity';
    return String(v);
  }
  if (Array.isArray(v)) return `[${v.map(pyValue).join(', ')}]`;
  return JSON.stringify(v);
}

/** Python's datetime.isoformat() of a UTC time. */
export function isoOf(ts: number): string {
  return new Date(ts * 1000).toISOString().replace('Z', '000+00:00');
}

/** A small deterministic PRNG (mulberry32), so fixtures are reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const r4 = (x: number) => Math.round(x * 1e4) / 1e4;

/** What one training step writes: beat, progress (every field) and step_end. */
export interface StepOpts {
  rank: number;
  pid: number;
  step: number;
  ts: number;
  rnd: () => number;
  /** write a NaN loss/grad_norm in this step's progress record */
  nan?: boolean;
  /** throughput of the progress record (default: realistic) */
  toks?: number;
  /** only the progress record */
  progressOnly?: boolean;
}

/** The progress record of a step, every field the trainer writes (plus a few unknown ones). */
export function progressRecord(o: StepOpts): Record<string, unknown> {
  const { rnd } = o;
  const ts = o.ts + 0.31;
  const shares = [r4(0.3 + rnd() * 0.05), r4(0.3 + rnd() * 0.05)];
  shares.push(r4(1 - shares[0] - shares[1]));
  return {
    ts,
    iso: isoOf(ts),
    pid: o.pid,
    rank: o.rank,
    step: o.step,
    msg: 'progress',
    gpu_mem_alloc: 30512 + Math.floor(rnd() * 64),
    gpu_mem_reserved: 40960,
    loss: o.nan ? NaN : 2 + 3 / Math.sqrt(1 + o.step / 100) + rnd() * 0.01,
    lr: 0.0003 * Math.min(1, o.step / 2000),
    toks_per_s: o.toks ?? 180000 + rnd() * 4000,
    dt_fetch_s: 0.002 + rnd() * 0.001,
    grad_norm: o.nan ? NaN : 0.8 + rnd() * 0.4,
    gate_entropy_mean: 1.05 + rnd() * 0.02,
    gate_entropy_min: 0.92 + rnd() * 0.02,
    gate_max_gate: 0.41 + rnd() * 0.05,
    gate_collapse_frac: 0.0,
    gate_branch_shares: shares,
    sel_k_mean: 14.5 + rnd(),
    sel_k_max: 16,
    sel_rows: 8192,
    sel_pct_at_max: 0.12 + rnd() * 0.01,
    fb_sel_fallbacks: 0,
    fb_cmp_fallbacks: 0,
  };
}

/** The three lines (with newlines) one logging step writes. */
export function stepLines(o: StepOpts): string {
  const p = pyDumps(progressRecord(o));
  if (o.progressOnly) return p + '\n';
  const gpu = { gpu_mem_alloc: 30512, gpu_mem_reserved: 40960 };
  const beat = pyDumps({ ts: o.ts, iso: isoOf(o.ts), pid: o.pid, rank: o.rank, step: o.step, msg: 'beat', phase: 'step_start', ...gpu });
  const te = o.ts + 0.32;
  const end = pyDumps({ ts: te, iso: isoOf(te), pid: o.pid, rank: o.rank, step: o.step, msg: 'step_end', phase: 'end', ...gpu });
  return `${beat}\n${p}\n${end}\n`;
}

/** The boot record. */
export function bootLine(rank: number, pid: number, ts: number): string {
  return pyDumps({ ts, iso: isoOf(ts), pid, rank, step: 0, msg: 'boot', phase: 'start' }) + '\n';
}

/** Writes a heartbeat file of about `targetBytes` (whole steps); a NaN step every `nanEvery` steps. */
export function writeHeartbeatFile(
  path: string,
  targetBytes: number,
  opts: { rank?: number; startTs?: number; nanEvery?: number; seed?: number } = {},
): { lines: number; bytes: number; lastStep: number; nanLines: number } {
  const rank = opts.rank ?? 0;
  const rnd = prng(opts.seed ?? 42);
  const pid = 4242;
  // By default the newest record is about "now" (≈1,050 bytes per step, 0.5 s per step).
  const startTs = opts.startTs ?? Math.floor(Date.now() / 1000 - 10 - (targetBytes / 1050) * 0.5);
  const nanEvery = opts.nanEvery ?? 5000;
  const fd = openSync(path, 'w');
  let bytes = 0;
  let lines = 0;
  let nanLines = 0;
  let step = 0;
  let chunk = bootLine(rank, pid, startTs);
  lines++;
  try {
    while (bytes + chunk.length < targetBytes) {
      step++;
      const nan = step % nanEvery === 0;
      if (nan) nanLines++;
      chunk += stepLines({ rank, pid, step, ts: startTs + 10 + step * 0.5, rnd, nan });
      lines += 3;
      if (chunk.length >= 8 << 20) {
        bytes += writeSync(fd, chunk);
        chunk = '';
      }
    }
    bytes += writeSync(fd, chunk);
  } finally {
    closeSync(fd);
  }
  return { lines, bytes, lastStep: step, nanLines };
}

// ---------------------------------------------------------------- processes

/** utime+stime of a process in seconds (from /proc/<pid>/stat). */
export function cpuSecondsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields after "(comm)": state is index 0 → utime is field 14 overall = index 11 here
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

/** Clock ticks per second; 100 on every Linux this runs on (USER_HZ). */
export const CLK_TCK = 100;

/** VmRSS and VmHWM of a process, in bytes. */
export function memOf(pid: number): { rss: number; hwm: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** A trainwatch process started by a benchmark. */
export interface Tw {
  proc: ChildProcess;
  pid: number;
  url: string;
  /** the last 64 KiB of its output */
  logs(): string;
  stop(): Promise<void>;
}

/**
 * Starts the real CLI (bin/trainwatch.js) on a free loopback port, logging at info (the
 * default) so the log volume is what production sees, and waits for /readyz; `wrap` runs it
 * through a command that execs it (its pid stays node's).
 * TW_BENCH_TW_NODE_ARGS adds node flags for the child (e.g. --cpu-prof); TW_BENCH_BIN
 * replaces bin/trainwatch.js (to A/B a patched copy of the build).
 */
export async function startTw(args: string[], env: Record<string, string> = {}, readyTimeoutMs = 60_000, wrap: string[] = []): Promise<Tw> {
  const port = await freePort();
  // TW_BENCH_TW_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the trainwatch child.
  const nodeArgs = process.env.TW_BENCH_TW_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  // TW_BENCH_BIN runs another build (e.g. a patched copy) for A/B experiments.
  const argv = [process.execPath, ...nodeArgs, process.env.TW_BENCH_BIN ?? BIN, '--web.listen-address', `127.0.0.1:${port}`, ...args];
  // `wrap`: a command that ends by exec'ing its arguments (e.g. sh -c 'ulimit -n 1024 && exec "$@"' sh), so the pid is node's
  const proc = spawn([...wrap, ...argv][0], [...wrap, ...argv].slice(1), {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const keep = (d: Buffer) => {
    out += d.toString();
    if (out.length > 1 << 17) out = out.slice(-(1 << 16));
  };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  const url = `http://127.0.0.1:${port}`;
  const end = Date.now() + readyTimeoutMs;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`trainwatch exited with ${proc.exitCode}:\n${out.slice(-4000)}`);
    try {
      if ((await fetch(`${url}/readyz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > end) {
      proc.kill('SIGKILL');
      throw new Error(`trainwatch not ready after ${readyTimeoutMs} ms:\n${out.slice(-4000)}`);
    }
    await sleep(20);
  }
  return {
    proc,
    pid: proc.pid!,
    url,
    logs: () => out,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}

/** The value of one exposed series (exact "name{labels}"), or undefined. */
export function seriesValue(text: string, series: string): number | undefined {
  const at = text.indexOf(`\n${series} `);
  if (at < 0) return undefined;
  const start = at + series.length + 2;
  const nl = text.indexOf('\n', start);
  return Number(text.slice(start, nl < 0 ? undefined : nl));
}

/** One /healthz probe: when it was sent (wall s), its round trip, and the status (0: no answer). */
export interface Sample {
  at: number;
  ms: number;
  status: number;
}

/** A prober process (bench/probe.ts) asking `url`/healthz every `intervalMs`; its samples arrive as it runs. */
export interface Prober {
  proc: ChildProcess;
  samples: Sample[];
  /** the samples sent in [from, to) (wall s) */
  between(from: number, to: number): Sample[];
  stop(): void;
}

/** Starts bench/probe.ts in its own process: `keepalive` probes on one connection, `fresh` on a new one each. */
export function startProber(url: string, intervalMs: number, mode: 'keepalive' | 'fresh'): Prober {
  const script = fileURLToPath(new URL('./probe.js', import.meta.url));
  const proc = spawn(process.execPath, [script, url, String(intervalMs), mode], { stdio: ['ignore', 'pipe', 'inherit'] });
  const samples: Sample[] = [];
  let partial = '';
  proc.stdout.on('data', (d: Buffer) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop()!;
    for (const l of lines) {
      const [at, ms, status] = l.split(' ').map(Number);
      samples.push({ at, ms, status });
    }
  });
  return {
    proc,
    samples,
    between: (from, to) => samples.filter((s) => s.at >= from && s.at < to),
    stop: () => proc.kill('SIGTERM'),
  };
}
