// Benchmark: how fast a control run is halted while a hostile case plays in another run dir on
// the same trainwatch (issue 11: the bulkhead; target: within 2 s next to each case).
//
// For each case: a fresh root with three control runs (ctl0..ctl2, one healthy record each) and
// a victim run; trainwatch starts on it (`--root --halt 1`, every other setting at its default)
// and the controls are seen in /metrics; then the case starts in the victim run (the cases of
// test/hostile and test/reliability/hostile-files, the loops kept running for the whole case);
// 0.5 s later, three times 0.5 s apart, one control run gets a progress record with a NaN loss,
// and the time from that append to its .HALT on disk is measured (polled every 2 ms; 30 s is
// a hang). Then the case and trainwatch are stopped and the root removed.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, symlinkSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pyJson } from '../test/helpers/proc.js';
import { beat, record, spawnFifoSwapper } from '../test/helpers/reliability.js';
import { benchTmp, runMain, say, seriesValue, sleep, startTw, type Row, type Tw } from './lib.js';

const NAME = 'control run halted next to hostile cases';
const TARGET = '.HALT within 2 s';
const CONTROLS = 3;
const HANG_MS = 30_000;
const AUDIT = '.trainwatch-audit.jsonl';

/** A hostile case: `start` sets it up in `victim` (a run dir under `root`) and returns how to stop what it left running. */
interface Case {
  /** a short name for the table */
  key: string;
  name: string;
  /** run trainwatch through this (a command that execs its arguments) */
  wrap?: string[];
  start(victim: string, ctx: { root: string; outside: string }): (() => Promise<void>) | void;
}

/** renameat2(RENAME_EXCHANGE) of argv[1] and argv[2] in a loop, until killed. */
const EXCHANGE_PY = String.raw`
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b = (p.encode() for p in sys.argv[1:3])
while True:
    if libc.renameat2(-100, a, -100, b, 2) != 0:
        sys.exit('renameat2 failed')
`;

const ULIMIT_1024 = ['sh', '-c', 'ulimit -n 1024 && exec "$@"', 'sh'];

/** `runs` run dirs (the first is `victim`, the others beside it) of `files` heartbeat files each; `quiet` ones get an mtime an hour ago. */
function manyFiles(victim: string, root: string, runs: number, files: number, quiet: (run: number, rank: number) => boolean): void {
  const old = new Date(Date.now() - 3600_000);
  for (let r = 0; r < runs; r++) {
    const dir = r === 0 ? victim : join(root, `many${r}`);
    mkdirSync(dir, { recursive: true });
    for (let k = 0; k < files; k++) {
      beat(dir, k, 1);
      if (quiet(r, k)) utimesSync(join(dir, `heartbeat_rank${k}.jsonl`), old, old);
    }
  }
}

/** A latency for the table: ms, or "no .HALT in 30 s". */
const fmt = (ms: number) => (ms >= HANG_MS ? `no .HALT in ${HANG_MS / 1000} s` : `${ms.toFixed(0)} ms`);

const nanRecord = () => pyJson({ ts: Date.now() / 1000, rank: 0, step: 2, msg: 'progress', loss: NaN }) + '\n';
/** Kills a process the case left running, and waits for it to be gone. */
const killer = (p: ChildProcess) => async () => {
  if (p.exitCode === null && p.signalCode === null) {
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await gone;
  }
};

const CASES: Case[] = [
  { key: 'baseline', name: 'none (baseline)', start: () => undefined },
  {
    key: 'FIFO swap',
    name: 'FIFO renamed over a heartbeat file in a loop',
    start: (victim) => {
      beat(victim, 0, 1);
      return killer(spawnFifoSwapper(join(victim, 'heartbeat_rank0.jsonl'), 10_000_000, 'now').proc);
    },
  },
  {
    key: 'FIFO audit log',
    name: 'FIFO as the audit log of a run being halted',
    start: (victim) => {
      if (spawnSync('mkfifo', [join(victim, AUDIT)]).status !== 0) throw new Error('mkfifo failed');
      writeFileSync(join(victim, 'heartbeat_rank0.jsonl'), record(0, 1) + nanRecord());
    },
  },
  {
    key: '20k ranks',
    name: '20,000 ranks in one heartbeat file',
    start: (victim) => {
      let s = '';
      for (let r = 0; r < 20_000; r++) s += record(r, 1);
      writeFileSync(join(victim, 'heartbeat_rank0.jsonl'), s);
    },
  },
  {
    // issue 11 row 4: more heartbeat files than descriptors, most of them quiet (idle files release theirs)
    key: '4k files (quiet)',
    name: '4,000 heartbeat files, 3,800 quiet for an hour, under `ulimit -n 1024`',
    wrap: ULIMIT_1024,
    start: (victim, { root }) => manyFiles(victim, root, 40, 100, (r, k) => r * 100 + k >= 200),
  },
  {
    // more files written in the last 30 s (tail IDLE_MS) than descriptors: none of them may release its descriptor yet
    key: '2k files (fresh)',
    name: '2,000 heartbeat files written at once under `ulimit -n 1024`',
    wrap: ULIMIT_1024,
    start: (victim, { root }) => manyFiles(victim, root, 20, 100, () => false),
  },
  {
    key: '1 TB sparse',
    name: 'heartbeat file truncated to 1 TB (sparse)',
    start: (victim) => {
      beat(victim, 0, 1);
      truncateSync(join(victim, 'heartbeat_rank0.jsonl'), 2 ** 40);
      beat(victim, 0, 2);
    },
  },
  {
    key: 'dir/symlink exchange',
    name: 'run dir exchanged with a symlink to outside in a loop, while it is halted',
    start: (victim, { outside }) => {
      writeFileSync(join(victim, 'heartbeat_rank0.jsonl'), record(0, 1) + nanRecord());
      const link = join(outside, '..', 'swap');
      symlinkSync(outside, link);
      return killer(spawn('python3', ['-c', EXCHANGE_PY, victim, link], { stdio: 'ignore' }));
    },
  },
];

/** Appends a NaN loss to control run `dir` and returns the ms until its .HALT exists (HANG_MS: none came). */
async function haltLatency(dir: string): Promise<number> {
  const halt = join(dir, '.HALT');
  appendFileSync(join(dir, 'heartbeat_rank0.jsonl'), nanRecord());
  const t0 = performance.now();
  while (!existsSync(halt)) {
    if (performance.now() - t0 > HANG_MS) return HANG_MS;
    await sleep(2);
  }
  return performance.now() - t0;
}

runMain(NAME, TARGET, async (): Promise<Row> => {
  const results: Array<{ key: string; name: string; ms: number[]; healthz: number }> = [];
  // TW_BENCH_CASES=key,key runs only those cases (e.g. to re-measure one fix).
  const only = process.env.TW_BENCH_CASES?.split(',');
  for (const c of CASES.filter((x) => !only || only.includes(x.key))) {
    const tmp = benchTmp('hostile');
    const root = join(tmp.path, 'runs');
    const outside = join(tmp.path, 'outside');
    mkdirSync(outside);
    const controls = Array.from({ length: CONTROLS }, (_, i) => join(root, `ctl${i}`));
    for (const d of controls) {
      mkdirSync(d, { recursive: true });
      beat(d, 0, 1);
    }
    const victim = join(root, 'victim');
    mkdirSync(victim);
    let tw: Tw | undefined;
    let stop: (() => Promise<void>) | void = undefined;
    try {
      tw = await startTw(['--root', root, '--halt', '1'], {}, 60_000, c.wrap);
      for (let i = 0; ; i++) {
        const m = await (await fetch(`${tw.url}/metrics`)).text();
        if (controls.every((_, k) => seriesValue(m, `trainwatch_step{run="ctl${k}",rank="0"}`) === 1)) break;
        if (i > 500) throw new Error(`${c.name}: the control runs never appeared in /metrics`);
        await sleep(20);
      }
      stop = c.start(victim, { root, outside });
      await sleep(500);
      const ms: number[] = [];
      for (const d of controls) {
        ms.push(await haltLatency(d));
        await sleep(500);
      }
      const h0 = performance.now();
      const ok = (await fetch(`${tw.url}/healthz`, { signal: AbortSignal.timeout(HANG_MS) })).ok;
      const healthz = ok ? performance.now() - h0 : HANG_MS;
      results.push({ key: c.key, name: c.name, ms, healthz });
      say(`${c.name}: .HALT after ${ms.map(fmt).join(', ')}; /healthz then ${healthz.toFixed(0)} ms`);
    } finally {
      if (stop) await stop();
      await tw?.stop();
      tmp.cleanup();
    }
  }
  const worst = Math.max(...results.flatMap((r) => r.ms));
  return {
    name: NAME,
    figure: `worst ${fmt(worst)}; per case, worst of ${CONTROLS}: ${results.map((r) => `${r.key} ${fmt(Math.max(...r.ms))}`).join(', ')}`,
    target: TARGET,
    verdict: worst < 2000 ? 'met' : 'MISSED',
    data: { worstMs: worst, cases: results },
  };
});
