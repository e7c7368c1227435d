// Benchmark 8: how long trainwatch's event loop is blocked by a scrape or by a big append.
//
// The real process watches 2,000 ranks (250 runs × 8 heartbeat files of 20 steps each under
// one --root) plus four single-rank "backlog" runs, one per burst. A prober in a separate process
// (bench/probe.ts) sends GET /healthz over one keep-alive connection every 10 ms and records
// each round trip: a probe that arrives while the loop is blocked waits for the block to end,
// so the worst round trip ≈ the longest block (within the 10 ms sampling). Cross-check from
// inside: prom-client's nodejs_eventloop_lag_max_seconds (perf_hooks.monitorEventLoopDelay,
// reset at every scrape) read from the scrapes.
//
// Phases, one after the other:
//   idle  – 3 s, nothing but the prober (the noise floor of this machine);
//   (a)   – scrape alone: /metrics back to back for 8 s, no writes;
//   (b)   – big append alone: a steady writer (bench/appender.py, 64 files × 10 records/s,
//           open-append-close per record) plus two bursts of 50 MB written with one write()
//           each to one file (a trainer flushing a backlog), no scrapes, 10 s;
//   (c)   – both: the scrape loop, the steady writer and two more 50 MB bursts, 10 s.
// Reported per phase: max and p99 of the /healthz round trip (the blocking), the internal lag
// maximum, and the scrape times. Afterwards: every burst line was read
// (trainwatch_lines_read_total). Target: max blocking < 100 ms in every phase.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, closeSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from '../test/helpers/proc.js';
import {
  benchTmp,
  bootLine,
  cpuSecondsOf,
  median,
  memOf,
  pct,
  prng,
  runMain,
  say,
  seriesValue,
  sleep,
  startProber,
  startTw,
  stepLines,
  wallS,
  type Prober,
  type Row,
  type Tw,
} from './lib.js';

const NAME = 'event-loop blocking';
const TARGET = 'max < 100 ms (scrape, 50 MB append, both)';
const RUNS = Number(process.env.TW_BENCH_EL_RUNS ?? 250);
const RANKS = 8;
const STEPS = 20;
const BURST_BYTES = Number(process.env.TW_BENCH_BURST_BYTES ?? 50 << 20);
const PROBE_MS = 10;
const IDLE_S = 3;
const SCRAPE_S = 8;
const APPEND_S = 10;
const STEADY_FILES = 64;
const STEADY_RATE = 10;

/** About `bytes` of step records of one rank (beat, progress, step_end per step), the last at `endTs`. */
function burst(rank: number, bytes: number, rnd: () => number, endTs: number, dt: number): { buf: Buffer; lines: number } {
  const parts: string[] = [];
  let size = 0;
  const steps = Math.ceil(bytes / 1050);
  const t0 = endTs - steps * dt;
  let step = 1000;
  while (size < bytes) {
    const s = stepLines({ rank, pid: 7777, step, ts: t0 + (step - 1000) * dt, rnd });
    parts.push(s);
    size += s.length;
    step++;
  }
  const text = parts.join('');
  return { buf: Buffer.from(text), lines: parts.length * 3 };
}

interface PhaseOut {
  name: string;
  probes: number;
  maxMs: number;
  p99Ms: number;
  p50Ms: number;
  /** nodejs_eventloop_lag_max_seconds seen in this phase's scrapes (ms) */
  lagMaxMs?: number;
  scrapes?: number;
  scrapeP50Ms?: number;
  scrapeMaxMs?: number;
  cpuFraction: number;
}

runMain(NAME, TARGET, async (): Promise<Row> => {
  const tmp = benchTmp('eventloop');
  let tw: Tw | undefined;
  let prober: Prober | undefined;
  let writer: ChildProcess | undefined;
  try {
    const rnd = prng(17);
    const now = Date.now() / 1000;
    const t0 = performance.now();
    const steadyFiles: string[] = [];
    for (let r = 0; r < RUNS; r++) {
      const dir = join(tmp.path, `run${String(r).padStart(3, '0')}`);
      mkdirSync(dir);
      for (let k = 0; k < RANKS; k++) {
        const pid = 30_000 + r * RANKS + k;
        let text = bootLine(k, pid, now - 120);
        for (let s = 1; s <= STEPS; s++) text += stepLines({ rank: k, pid, step: 100 + s, ts: now - 20 + s * 0.5, rnd });
        const f = join(dir, `heartbeat_rank${k}.jsonl`);
        writeFileSync(f, text);
        if (steadyFiles.length < STEADY_FILES) steadyFiles.push(f);
      }
    }
    // Four backlog runs (one rank each), one per burst: a boot record, then 50 MB at once.
    const burstFiles: string[] = [];
    const burstDt = 0.25;
    const burstSpan = Math.ceil(BURST_BYTES / 1050) * burstDt;
    for (let b = 0; b < 4; b++) {
      const dir = join(tmp.path, `backlog${b}`);
      mkdirSync(dir);
      const f = join(dir, 'heartbeat_rank0.jsonl');
      writeFileSync(f, bootLine(0, 7777, now - burstSpan - 120));
      burstFiles.push(f);
    }
    say(`fixture: ${RUNS} runs × ${RANKS} ranks (${STEPS} steps each) + 4 backlog runs, written in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    // --run.ttl-s: the backlog runs start hours ago (their records catch up to now in the burst);
    // no stall detection, so the hours-old boot records of the backlog runs do not act (this
    // benchmark is about blocking; the writes detection makes are measured elsewhere)
    tw = await startTw(['--root', tmp.path, '--run.ttl-s', '86400'], { NSA_WATCH_HEARTBEAT_STALL_S: '86400' }, 120_000);
    const url = tw.url;
    const total = RUNS * RANKS + 4;
    let text = '';
    for (let i = 0; i < 200; i++) {
      text = await (await fetch(`${url}/metrics`)).text();
      if ((text.match(/^trainwatch_step\{/gm)?.length ?? 0) >= RUNS * RANKS) break;
      await sleep(100);
    }
    say(
      `trainwatch ready: ${text.match(/^trainwatch_step\{/gm)?.length ?? 0} ranks exported of ${total} files (backlog runs have no step yet), /metrics ${(text.length / 2 ** 20).toFixed(1)} MiB`,
    );
    prober = startProber(url, PROBE_MS, 'keepalive');
    await sleep(1000);

    let lagMax = 0;
    const scrapeMs: number[] = [];
    let scraping = false;
    let scrapeLoop: Promise<void> | undefined;
    const scrapeOnce = async () => {
      const s0 = performance.now();
      const r = await fetch(`${url}/metrics`);
      const body = await r.text();
      const ms = performance.now() - s0;
      if (!r.ok) throw new Error(`/metrics answered ${r.status}`);
      const lag = seriesValue(body, 'nodejs_eventloop_lag_max_seconds');
      return { ms, lag: lag === undefined ? NaN : lag * 1000, body };
    };
    const startScraping = () => {
      scraping = true;
      scrapeMs.length = 0;
      lagMax = 0;
      scrapeLoop = (async () => {
        while (scraping) {
          const s = await scrapeOnce();
          scrapeMs.push(s.ms);
          lagMax = Math.max(lagMax, s.lag);
        }
      })();
    };
    const stopScraping = async () => {
      scraping = false;
      await scrapeLoop;
    };

    const phases: PhaseOut[] = [];
    const phase = async (name: string, seconds: number, body: () => Promise<void>, scrape: boolean) => {
      // one scrape to reset the internal lag histogram (its own render shows in the next reading)
      await scrapeOnce();
      await sleep(300);
      const from = wallS();
      const c0 = cpuSecondsOf(tw!.pid);
      if (scrape) startScraping();
      const end = performance.now() + seconds * 1000;
      await body();
      const rest = end - performance.now();
      if (rest > 0) await sleep(rest);
      if (scrape) await stopScraping();
      const to = wallS();
      const cpu = (cpuSecondsOf(tw!.pid) - c0) / (to - from);
      const xs = prober!
        .between(from, to)
        .filter((s) => s.status === 200)
        .map((s) => s.ms);
      let lag = scrape ? lagMax : undefined;
      if (!scrape) {
        await sleep(50);
        lag = (await scrapeOnce()).lag;
      }
      const out: PhaseOut = { name, probes: xs.length, maxMs: Math.max(...xs), p99Ms: pct(xs, 99), p50Ms: median(xs), lagMaxMs: lag, cpuFraction: cpu };
      if (scrape) Object.assign(out, { scrapes: scrapeMs.length, scrapeP50Ms: median(scrapeMs), scrapeMaxMs: Math.max(...scrapeMs) });
      phases.push(out);
      say(
        `${name}: /healthz round trip over ${xs.length} probes: max ${out.maxMs.toFixed(1)} ms, p99 ${out.p99Ms.toFixed(1)} ms, p50 ${out.p50Ms.toFixed(1)} ms; internal lag max ${lag?.toFixed(0) ?? '–'} ms` +
          (scrape ? `; ${scrapeMs.length} scrapes, p50 ${out.scrapeP50Ms!.toFixed(0)} ms, max ${out.scrapeMaxMs!.toFixed(0)} ms` : '') +
          `; trainwatch CPU ${(cpu * 100).toFixed(0)} % of a core`,
      );
    };

    // Bursts are built before their phase (the bench process is busy ~1 s building 50 MB).
    const bursts = burstFiles.map((_, b) => burst(0, BURST_BYTES, prng(100 + b), now, burstDt));
    const burstLines = bursts.reduce((s, b) => s + b.lines, 0);
    say(`bursts: 4 × ${(bursts[0].buf.length / 2 ** 20).toFixed(1)} MiB (${bursts[0].lines} lines each)`);
    const linesBefore = seriesValue(text, 'trainwatch_lines_read_total') ?? NaN;
    const writeBurst = (b: number) => {
      const t = performance.now();
      const fd = openSync(burstFiles[b], 'a');
      try {
        writeSync(fd, bursts[b].buf);
      } finally {
        closeSync(fd);
      }
      say(
        `  burst ${b}: ${(bursts[b].buf.length / 2 ** 20).toFixed(0)} MiB appended to ${burstFiles[b].slice(tmp.path.length + 1)} in ${(performance.now() - t).toFixed(0)} ms`,
      );
    };

    await phase('idle', IDLE_S, async () => undefined, false);
    await phase('(a) scrape alone', SCRAPE_S, async () => undefined, true);
    writer = spawn(
      'python3',
      [join(REPO, 'bench/appender.py'), '--rate', String(STEADY_RATE), '--seconds', String(2 * APPEND_S + 8), '--files', ...steadyFiles],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let wout = '';
    writer.stdout!.on('data', (d) => (wout += d));
    const wexit = new Promise<number | null>((r) => writer!.on('exit', (c) => r(c)));
    await sleep(1000);
    const appendBody = (first: number) => async () => {
      await sleep(1500);
      writeBurst(first);
      await sleep(APPEND_S * 500 - 1500);
      writeBurst(first + 1);
    };
    await phase(`(b) 2 × ${BURST_BYTES >> 20} MB append + ${STEADY_FILES * STEADY_RATE} rec/s`, APPEND_S, appendBody(0), false);
    await phase(`(c) scrape + 2 × ${BURST_BYTES >> 20} MB append + ${STEADY_FILES * STEADY_RATE} rec/s`, APPEND_S, appendBody(2), true);
    const code = await wexit;
    if (code !== 0) throw new Error(`steady writer exited with ${code}`);
    const w = JSON.parse(wout.trim().split('\n').pop()!) as { written: number };
    await sleep(1500);
    const after = await scrapeOnce();
    const linesAfter = seriesValue(after.body, 'trainwatch_lines_read_total') ?? NaN;
    const expected = burstLines + w.written;
    say(`lines read during the append phases: ${linesAfter - linesBefore} (bursts ${burstLines} + steady ${w.written} = ${expected})`);
    if (linesAfter - linesBefore !== expected) throw new Error(`trainwatch read ${linesAfter - linesBefore} lines, ${expected} were written`);
    const mem = memOf(tw.pid);
    const probeErrors = prober.samples.filter((s) => s.status !== 200).length;
    if (probeErrors) throw new Error(`${probeErrors} /healthz probes failed`);
    const [idle, a, b, c] = phases as [PhaseOut, PhaseOut, PhaseOut, PhaseOut];
    const worst = Math.max(a.maxMs, b.maxMs, c.maxMs);
    return {
      name: NAME,
      figure: `max /healthz round trip: scrape ${a.maxMs.toFixed(0)} ms, append ${b.maxMs.toFixed(0)} ms, both ${c.maxMs.toFixed(0)} ms (p99 ${a.p99Ms.toFixed(0)}/${b.p99Ms.toFixed(0)}/${c.p99Ms.toFixed(0)} ms; idle max ${idle.maxMs.toFixed(0)} ms)`,
      target: TARGET,
      verdict: worst < 100 ? 'met' : 'MISSED',
      data: { ranks: RUNS * RANKS, burstBytes: BURST_BYTES, burstLines, steadyWritten: w.written, rssBytes: mem.rss, peakRssBytes: mem.hwm, phases },
    };
  } finally {
    prober?.stop();
    if (writer && writer.exitCode === null) writer.kill('SIGKILL');
    await tw?.stop();
    tmp.cleanup();
  }
});
