// Test helpers: temp dirs, free ports, the real trainwatch process, the simulated trainer.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (tests run from dist/test/...). */
export const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
export const BIN = join(REPO, 'bin/trainwatch.js');
export const SIM = join(REPO, 'scripts/sim_trainer.py');

let shared: string | undefined;

/**
 * A trainwatch that any user can run (bin/, dist/, package.json, node_modules/), for tests that
 * run it as another user (nobody): REPO itself when every directory down to it lets others
 * through, otherwise a copy in the temp directory, made once per test process and removed at
 * its exit. A checkout in a 0700 directory (mktemp -d, root's home) is then no obstacle.
 */
export function repoForAnyUser(): string {
  if (shared) return shared;
  let open = true;
  for (let d = REPO; ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) open = false;
    if (dirname(d) === d) break;
  }
  if (open) return (shared = REPO);
  const copy = mkdtempSync(join(tmpdir(), 'tw-any-user-'));
  chmodSync(copy, 0o755);
  const r = spawnSync('cp', ['-a', ...['bin', 'dist', 'package.json', 'node_modules'].map((n) => join(REPO, n)), copy], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cannot stage trainwatch for another user in ${copy}: ${r.stderr}`);
  process.on('exit', () => rmSync(copy, { recursive: true, force: true }));
  return (shared = copy);
}

/** A fresh temp directory, removed by the returned cleanup. */
export function tmpDir(prefix = 'tw-test-'): { path: string; cleanup(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  // Never throws: a teardown that fails here must not keep later teardown steps (and processes) alive.
  return {
    path,
    cleanup: () => {
      try {
        rmSync(path, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
      } catch {
        // a process still writing into it; the OS temp dir is cleaned eventually
      }
    },
  };
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** Polls `cond` every `stepMs` until it returns a truthy value; throws with `what` on timeout. */
export async function waitFor<T>(cond: () => T | Promise<T>, what: string, timeoutMs = 30_000, stepMs = 25): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** Fails with the install command when a needed binary is missing (never skips). */
export function requireBinary(bin: string, debPackage: string): string {
  const r = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' });
  if (r.status !== 0)
    throw new Error(
      `${bin} is not installed. Fix: apt-get update && apt-get install -y --no-install-recommends ${debPackage} (npm test does this when run as root)`,
    );
  return r.stdout.trim();
}

/** A running trainwatch process. */
export interface TrainwatchProc {
  proc: ChildProcess;
  port: number;
  url: string;
  logs(): string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts the real trainwatch CLI on a free port and waits until it serves. */
export async function startTrainwatch(args: string[], env: Record<string, string> = {}, cwd?: string): Promise<TrainwatchProc> {
  const port = await freePort();
  const proc = spawn(process.execPath, [BIN, '--web.listen-address', `127.0.0.1:${port}`, '--log.level', 'debug', ...args], {
    env: { ...process.env, ...env },
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error(`trainwatch exited with ${proc.exitCode}:\n${out}`);
    const r = await fetch(`${url}/readyz`);
    return r.ok;
  }, 'trainwatch to become ready').catch((e) => {
    proc.kill('SIGKILL');
    throw new Error(`${(e as Error).message}\n--- trainwatch output ---\n${out}`);
  });
  return {
    proc,
    port,
    url,
    logs: () => out,
    stop: async (signal = 'SIGTERM') => {
      if (proc.exitCode === null) proc.kill(signal);
      return exited;
    },
  };
}

/** Teardown in reverse order of start-up, run even when the test fails; one failing step does not skip the rest. */
export function teardown(t: { after(fn: () => unknown): void; diagnostic(s: string): void }): (step: () => unknown) => void {
  const steps: Array<() => unknown> = [];
  t.after(async () => {
    for (const step of steps.reverse()) {
      try {
        await step();
      } catch (e) {
        t.diagnostic(`teardown: ${(e as Error).message}`);
      }
    }
  });
  return (step) => steps.push(step);
}

/** Scrapes /metrics and returns series → value ("name{labels}" exactly as exposed). */
export async function scrape(url: string, path = '/metrics'): Promise<Map<string, number>> {
  const text = await (await fetch(url + path)).text();
  return parseExposition(text);
}

/** Parses exposition text into series → value. */
export function parseExposition(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const cut = line.lastIndexOf(' ');
    const v = line.slice(cut + 1);
    m.set(line.slice(0, cut), v === 'NaN' ? NaN : v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v));
  }
  return m;
}

/** A running simulated trainer. */
export interface SimTrainer {
  proc: ChildProcess;
  exited: Promise<number | null>;
  output(): string;
  kill(signal?: NodeJS.Signals): void;
}

/**
 * Starts scripts/sim_trainer.py (see its --help). `cwd` (created if missing) is its working
 * directory; by default the directory that holds its --dir, as the real trainer runs from its
 * checkout with out_dir below it (escalation's proof of the writer relies on that).
 */
export function startSimTrainer(args: string[], opts: { cwd?: string } = {}): SimTrainer {
  requireBinary('python3', 'python3');
  const at = args.indexOf('--dir');
  const cwd = opts.cwd ?? (at >= 0 ? dirname(args[at + 1]) : undefined);
  if (cwd) mkdirSync(cwd, { recursive: true });
  // Its own process group, so that kill() reaches every forked rank, hung ones included.
  const proc = spawn('python3', [SIM, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  return {
    proc,
    exited,
    output: () => out,
    kill: (signal = 'SIGKILL') => {
      try {
        process.kill(-proc.pid!, signal);
      } catch {
        // already gone
      }
    },
  };
}

/** Python's json.dumps spelling of a record: NaN and Infinity as bare tokens. */
export function pyJson(rec: Record<string, unknown>): string {
  return JSON.stringify(rec, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? `@@${v}@@` : v)).replace(/"@@(NaN|Infinity|-Infinity)@@"/g, '$1');
}
