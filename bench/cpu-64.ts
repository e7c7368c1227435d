// Benchmark 4: trainwatch CPU while 64 ranks (8 runs × 8 ranks) each append 10 records/s.
// The writer is a separate python3 process (bench/appender.py) that opens, appends and closes
// per record like the trainer. CPU = utime+stime of the trainwatch process from /proc over
// the writing window after a warm-up, divided by wall time. The warm-up is 15 s: for the first
// ~10 s of a new load V8 compiles optimised code on its own threads (42 % of perf samples in
// the first 12 s), a one-off cost for an exporter that runs for days; its CPU is reported
// separately. Also reported: idle CPU (same files, no writes) and that every record was read
// (trainwatch_lines_read_total).
// Target: < 1 % of one core.
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../test/helpers/proc.js';
import { benchTmp, bootLine, cpuSecondsOf, prng, runMain, say, seriesValue, sleep, startTw, stepLines, type Row } from './lib.js';

const NAME = 'CPU, 64 ranks × 10 rec/s';
const TARGET = '< 1 % of a core';
const RUNS = 8;
const RANKS = 8;
const RATE = 10;
const SECONDS = Number(process.env.TW_BENCH_CPU_SECONDS ?? 45);
const WARMUP_S = Number(process.env.TW_BENCH_CPU_WARMUP_S ?? 15);
const IDLE_S = 5;

runMain(NAME, TARGET, async (): Promise<Row> => {
  const tmp = benchTmp('cpu64');
  let tw: Awaited<ReturnType<typeof startTw>> | undefined;
  let writer: ReturnType<typeof spawn> | undefined;
  try {
    const files: string[] = [];
    const rnd = prng(3);
    const now = Date.now() / 1000;
    let initialLines = 0;
    for (let r = 0; r < RUNS; r++) {
      const dir = join(tmp.path, `run${r}`);
      mkdirSync(dir);
      for (let k = 0; k < RANKS; k++) {
        const f = join(dir, `heartbeat_rank${k}.jsonl`);
        writeFileSync(f, bootLine(k, 999, now - 30) + stepLines({ rank: k, pid: 999, step: 999, ts: now - 1, rnd }));
        initialLines += 4;
        files.push(f);
      }
    }
    tw = await startTw(['--root', tmp.path]);
    const metrics = async () => await (await fetch(`${tw!.url}/metrics`)).text();
    await sleep(1000);
    const linesAt = async () => seriesValue(await metrics(), 'trainwatch_lines_read_total') ?? NaN;
    // Idle: the same 64 files, nothing written (sweeps and timers only).
    let c0 = cpuSecondsOf(tw.pid);
    let w0 = performance.now();
    await sleep(IDLE_S * 1000);
    const idle = (cpuSecondsOf(tw.pid) - c0) / ((performance.now() - w0) / 1000);
    say(`idle: ${(idle * 100).toFixed(2)} % of a core over ${IDLE_S} s`);
    const before = await linesAt();
    say(`writer: ${files.length} files × ${RATE} records/s for ${SECONDS} s (python3, open-append-close per record)…`);
    writer = spawn('python3', [join(REPO, 'bench/appender.py'), '--rate', String(RATE), '--seconds', String(SECONDS), '--files', ...files], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let wout = '';
    writer.stdout!.on('data', (d) => (wout += d));
    const wexit = new Promise<number | null>((r) => writer!.on('exit', (c) => r(c)));
    const cw = cpuSecondsOf(tw.pid);
    const ww = performance.now();
    await sleep(WARMUP_S * 1000);
    c0 = cpuSecondsOf(tw.pid);
    const warm = (c0 - cw) / ((performance.now() - ww) / 1000);
    const wc0 = cpuSecondsOf(writer.pid!);
    w0 = performance.now();
    // Measure until the writer is nearly done (not past its end: its last second is still writing).
    await sleep((SECONDS - WARMUP_S - 1) * 1000);
    const c1 = cpuSecondsOf(tw.pid);
    const wc1 = cpuSecondsOf(writer.pid!);
    const wall = (performance.now() - w0) / 1000;
    const code = await wexit;
    if (code !== 0) throw new Error(`writer exited with ${code}`);
    const w = JSON.parse(wout.trim().split('\n').pop()!) as { written: number; wall_s: number; cpu_s: number; late_max_s: number };
    await sleep(1500);
    const after = await linesAt();
    const read = after - before;
    const cpu = (c1 - c0) / wall;
    say(
      `writer wrote ${w.written} records in ${w.wall_s.toFixed(1)} s (${(w.written / w.wall_s).toFixed(0)}/s; max lateness ${(w.late_max_s * 1000).toFixed(0)} ms); writer CPU ${(((wc1 - wc0) / wall) * 100).toFixed(1)} %`,
    );
    say(`trainwatch read ${read} of them (lines_read_total ${before} → ${after})`);
    say(
      `trainwatch CPU over ${wall.toFixed(1)} s of writing after a ${WARMUP_S} s warm-up: ${(c1 - c0).toFixed(2)} s = ${(cpu * 100).toFixed(2)} % of a core (warm-up: ${(warm * 100).toFixed(2)} %; idle ${(idle * 100).toFixed(2)} %)`,
    );
    if (read !== w.written) throw new Error(`trainwatch read ${read} lines, the writer wrote ${w.written}`);
    return {
      name: NAME,
      figure: `${(cpu * 100).toFixed(2)} % of a core after a ${WARMUP_S} s warm-up (first ${WARMUP_S} s: ${(warm * 100).toFixed(1)} %; idle ${(idle * 100).toFixed(2)} %); writer ${(w.written / w.wall_s).toFixed(0)} rec/s`,
      target: TARGET,
      verdict: cpu < 0.01 ? 'met' : 'MISSED',
      data: {
        cpuFraction: cpu,
        warmupCpuFraction: warm,
        warmupS: WARMUP_S,
        idleCpuFraction: idle,
        cpuSeconds: c1 - c0,
        wallS: wall,
        written: w.written,
        read,
        writerCpuFraction: (wc1 - wc0) / wall,
        initialLines,
      },
    };
  } finally {
    if (writer && writer.exitCode === null) writer.kill('SIGKILL');
    await tw?.stop();
    tmp.cleanup();
  }
});
