// Benchmark 3: /metrics request time and process RSS with 10,000 ranks (1,250 runs × 8 ranks,
// small heartbeat files under one --root), against the real trainwatch process.
// Request time is measured by the client: request sent → whole body received, sequentially.
// Targets: median and p99 < 100 ms; RSS < 300 MB.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchTmp, bootLine, cpuSecondsOf, median, memOf, pct, prng, runMain, say, seriesValue, startTw, stepLines, type Row } from './lib.js';

const NAME = 'scrape, 10,000 ranks';
const TARGET = 'p99 < 100 ms, RSS < 300 MB';
const RUNS = Number(process.env.TW_BENCH_RUNS ?? 1250);
const RANKS = 8;
const STEPS = 4;
const SCRAPES = 20;
const IDLE_S = 6;

runMain(NAME, TARGET, async (): Promise<Row> => {
  const tmp = benchTmp('scrape10k');
  let tw: Awaited<ReturnType<typeof startTw>> | undefined;
  try {
    const rnd = prng(7);
    const now = Date.now() / 1000;
    const t0 = performance.now();
    for (let r = 0; r < RUNS; r++) {
      const dir = join(tmp.path, `run${String(r).padStart(4, '0')}`);
      mkdirSync(dir);
      for (let k = 0; k < RANKS; k++) {
        const pid = 10_000 + r * RANKS + k;
        let text = bootLine(k, pid, now - 60);
        for (let s = 1; s <= STEPS; s++) text += stepLines({ rank: k, pid, step: 100 + s, ts: now - 10 + s, rnd });
        writeFileSync(join(dir, `heartbeat_rank${k}.jsonl`), text);
      }
    }
    const total = RUNS * RANKS;
    say(`fixture: ${RUNS} runs × ${RANKS} ranks = ${total} files of ${1 + 3 * STEPS} records, written in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const t1 = performance.now();
    tw = await startTw(['--root', tmp.path], {}, 120_000);
    say(`trainwatch ready (first sweep over ${total} files) after ${((performance.now() - t1) / 1000).toFixed(1)} s`);
    // Wait until every rank is exported (it is after the first sweep, but be sure).
    let text = '';
    for (let i = 0; i < 100; i++) {
      text = await (await fetch(`${tw.url}/metrics`)).text();
      if (seriesValue(text, 'trainwatch_files_watched') === total && (text.match(/^trainwatch_step\{/gm)?.length ?? 0) === total) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const steps = text.match(/^trainwatch_step\{/gm)?.length ?? 0;
    if (steps !== total) throw new Error(`only ${steps} of ${total} ranks exported`);
    const lines = text.split('\n').length;
    say(`/metrics: ${lines} lines, ${(text.length / 2 ** 20).toFixed(1)} MiB, ${steps} ranks`);
    // Idle cost before any timed scrape: the periodic stat sweep over every file.
    const memIdle = memOf(tw.pid);
    const c0 = cpuSecondsOf(tw.pid);
    const w0 = performance.now();
    await new Promise((r) => setTimeout(r, IDLE_S * 1000));
    const idleCpu = (cpuSecondsOf(tw.pid) - c0) / ((performance.now() - w0) / 1000);
    say(`idle (no scrapes, no writes) for ${IDLE_S} s: ${(idleCpu * 100).toFixed(1)} % of a core; RSS ${(memIdle.rss / 1e6).toFixed(0)} MB before timed scrapes`);
    // Warm-up scrapes, then the timed ones.
    for (let i = 0; i < 3; i++) await (await fetch(`${tw.url}/metrics`)).text();
    const ms: number[] = [];
    for (let i = 0; i < SCRAPES; i++) {
      const s0 = performance.now();
      const r = await fetch(`${tw.url}/metrics`);
      const body = await r.text();
      ms.push(performance.now() - s0);
      if (!r.ok || body.length < text.length / 2) throw new Error(`scrape ${i} returned ${r.status}, ${body.length} bytes`);
    }
    const mem = memOf(tw.pid);
    const med = median(ms);
    const p99 = pct(ms, 99);
    say(`${SCRAPES} scrapes: median ${med.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, min ${Math.min(...ms).toFixed(1)} ms`);
    say(`RSS ${(mem.rss / 1e6).toFixed(0)} MB (peak ${(mem.hwm / 1e6).toFixed(0)} MB)`);
    const ok = p99 < 100 && med < 100 && mem.rss < 300e6;
    return {
      name: NAME,
      figure: `median ${med.toFixed(0)} ms, p99 ${p99.toFixed(0)} ms; RSS ${(mem.rss / 1e6).toFixed(0)} MB (peak ${(mem.hwm / 1e6).toFixed(0)}, idle ${(memIdle.rss / 1e6).toFixed(0)} MB); idle CPU ${(idleCpu * 100).toFixed(0)} %`,
      target: TARGET,
      verdict: ok ? 'met' : 'MISSED',
      data: { ranks: total, idleCpuFraction: idleCpu, rssBeforeScrapesBytes: memIdle.rss, medianMs: med, p99Ms: p99, rssBytes: mem.rss, peakRssBytes: mem.hwm, bodyBytes: text.length, bodyLines: lines, ms },
    };
  } finally {
    await tw?.stop();
    tmp.cleanup();
  }
});
