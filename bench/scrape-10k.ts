// Benchmark 3: /metrics request time and process RSS with 10,000 ranks (1,250 runs × 8 ranks,
// small heartbeat files under one --root), against the real trainwatch process.
// The client does what Prometheus does: one keep-alive connection, Prometheus's Accept and
// `Accept-Encoding: gzip` headers, and the body decompressed. Request time is request sent →
// whole body received and decompressed, one scrape after the other. The timed scrapes
// alternate between gzip (Prometheus's default: the headline figure) and identity (Prometheus
// with `enable_compression: false`).
// Then a busy fleet: before each of a few more scrapes every rank gets one more step, so that no
// row of the previous scrape can be reused.
// Targets: median and p99 < 100 ms; RSS < 300 MB.
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { benchTmp, bootLine, cpuSecondsOf, median, memOf, pct, prng, runMain, say, seriesValue, sleep, startTw, stepLines, type Row } from './lib.js';

const NAME = 'scrape, 10,000 ranks';
const TARGET = 'p99 < 100 ms, RSS < 300 MB';
const RUNS = Number(process.env.TW_BENCH_RUNS ?? 1250);
const RANKS = 8;
const STEPS = 4;
const SCRAPES = 20;
const BUSY_SCRAPES = 8;
const IDLE_S = 6;

/** The headers of Prometheus 2.x with its default scrape_protocols. */
const PROM_HEADERS = {
  accept: 'application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2',
  'user-agent': 'Prometheus/2.53.0',
  'x-prometheus-scrape-timeout-seconds': '10',
};

interface Scrape {
  ms: number;
  /** bytes on the wire */
  wire: number;
  /** the body, decompressed */
  body: Buffer;
  encoding: string;
}

/** One scrape the way Prometheus makes it; `gzip` adds Accept-Encoding: gzip. */
function scrape(url: string, agent: Agent, gzip: boolean): Promise<Scrape> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request(url, { agent, headers: gzip ? { ...PROM_HEADERS, 'accept-encoding': 'gzip' } : PROM_HEADERS }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`/metrics answered ${res.statusCode}`));
      const encoding = res.headers['content-encoding'] ?? 'identity';
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('error', reject);
      res.on('end', () => {
        const raw = Buffer.concat(parts);
        try {
          // After the whole body, in one call: node's streaming gunzip makes a thread-pool round
          // trip per 16 KiB of output (about 1,000 for 18 MB), a cost of this client, not of trainwatch.
          const body = encoding === 'gzip' ? gunzipSync(raw) : raw;
          resolve({ ms: performance.now() - t0, wire: raw.length, body, encoding });
        } catch (e) {
          reject(e);
        }
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** A label-less series' value in an exposition body, without decoding all of it. */
function valueIn(body: Buffer, name: string): number | undefined {
  const at = body.indexOf(`\n${name} `);
  if (at < 0) return undefined;
  const start = at + name.length + 2;
  return Number(body.toString('latin1', start, body.indexOf(10, start)));
}

/** Waits until trainwatch used no CPU for two 100 ms periods in a row: it has read what was appended. */
async function quiet(pid: number, limitMs: number): Promise<void> {
  const end = Date.now() + limitMs;
  let calm = 0;
  let c = cpuSecondsOf(pid);
  while (calm < 2 && Date.now() < end) {
    await sleep(100);
    const c2 = cpuSecondsOf(pid);
    calm = c2 - c <= 0.01 ? calm + 1 : 0;
    c = c2;
  }
}

const stats = (ms: number[]) => ({ median: median(ms), p99: pct(ms, 99), min: Math.min(...ms), max: Math.max(...ms) });
const fmtStats = (x: ReturnType<typeof stats>) => `median ${x.median.toFixed(1)} ms, p99 ${x.p99.toFixed(1)} ms, min ${x.min.toFixed(1)} ms`;

runMain(NAME, TARGET, async (): Promise<Row> => {
  const tmp = benchTmp('scrape10k');
  let tw: Awaited<ReturnType<typeof startTw>> | undefined;
  const fileOf = (r: number, k: number) => join(tmp.path, `run${String(r).padStart(4, '0')}`, `heartbeat_rank${k}.jsonl`);
  try {
    const rnd = prng(7);
    const now = Date.now() / 1000;
    const t0 = performance.now();
    for (let r = 0; r < RUNS; r++) {
      mkdirSync(join(tmp.path, `run${String(r).padStart(4, '0')}`));
      for (let k = 0; k < RANKS; k++) {
        const pid = 10_000 + r * RANKS + k;
        let text = bootLine(k, pid, now - 60);
        for (let s = 1; s <= STEPS; s++) text += stepLines({ rank: k, pid, step: 100 + s, ts: now - 10 + s, rnd });
        writeFileSync(fileOf(r, k), text);
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
      await sleep(100);
    }
    const steps = text.match(/^trainwatch_step\{/gm)?.length ?? 0;
    if (steps !== total) throw new Error(`only ${steps} of ${total} ranks exported`);
    const bodyLines = text.split('\n').length;
    say(`/metrics: ${bodyLines} lines, ${(text.length / 2 ** 20).toFixed(1)} MiB, ${steps} ranks`);
    // Idle cost before any timed scrape: the periodic stat sweep over every file.
    const memIdle = memOf(tw.pid);
    const c0 = cpuSecondsOf(tw.pid);
    const w0 = performance.now();
    await sleep(IDLE_S * 1000);
    const idleCpu = (cpuSecondsOf(tw.pid) - c0) / ((performance.now() - w0) / 1000);
    say(
      `idle (no scrapes, no writes) for ${IDLE_S} s: ${(idleCpu * 100).toFixed(1)} % of a core; RSS ${(memIdle.rss / 1e6).toFixed(0)} MB before timed scrapes`,
    );
    // Warm-up scrapes, then the timed ones, gzip and identity in turn: ABBA, since a scrape
    // right after another is slower (the previous one's garbage) and alternating would favour one.
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const url = `${tw.url}/metrics`;
    for (let i = 0; i < 4; i++) await scrape(url, agent, i % 2 === 0);
    const gz: number[] = [];
    const plain: number[] = [];
    const wire = { gzip: 0, identity: 0 };
    for (let i = 0; i < 2 * SCRAPES; i++) {
      const gzip = i % 4 === 0 || i % 4 === 3;
      const s = await scrape(url, agent, gzip);
      (gzip ? gz : plain).push(s.ms);
      wire[gzip ? 'gzip' : 'identity'] = s.wire;
      if (s.body.length < text.length / 2) throw new Error(`scrape ${i} returned ${s.body.length} bytes`);
      if (i === 0 && s.encoding !== 'gzip') say('note: trainwatch answered Accept-Encoding: gzip uncompressed');
    }
    const mem = memOf(tw.pid);
    const g = stats(gz);
    const p = stats(plain);
    say(`${SCRAPES} scrapes with Accept-Encoding: gzip (${(wire.gzip / 2 ** 20).toFixed(1)} MiB on the wire): ${fmtStats(g)}`);
    say(`${SCRAPES} scrapes without it (${(wire.identity / 2 ** 20).toFixed(1)} MiB): ${fmtStats(p)}`);
    say(`RSS ${(mem.rss / 1e6).toFixed(0)} MB (peak ${(mem.hwm / 1e6).toFixed(0)} MB)`);
    // Busy fleet: every rank one step further before each scrape, so that every row changed.
    const busy: number[] = [];
    let early = 0;
    let linesRead = seriesValue(text, 'trainwatch_lines_read_total') ?? 0;
    const brnd = prng(11);
    for (let i = 0; i < BUSY_SCRAPES; i++) {
      const ts = Date.now() / 1000;
      for (let r = 0; r < RUNS; r++) {
        for (let k = 0; k < RANKS; k++) appendFileSync(fileOf(r, k), stepLines({ rank: k, pid: 10_000 + r * RANKS + k, step: 200 + i, ts, rnd: brnd }));
      }
      linesRead += 3 * total;
      await quiet(tw.pid, 10_000);
      const s = await scrape(url, agent, true);
      busy.push(s.ms);
      if (valueIn(s.body, 'trainwatch_lines_read_total') !== linesRead) early++;
    }
    const b = stats(busy);
    const memBusy = memOf(tw.pid);
    say(
      `busy fleet, every rank one step further before each of ${BUSY_SCRAPES} scrapes (gzip): ${fmtStats(b)}${early ? `; ${early} scrapes came before every appended line was read` : ''}`,
    );
    say(`RSS ${(memBusy.rss / 1e6).toFixed(0)} MB (peak ${(memBusy.hwm / 1e6).toFixed(0)} MB)`);
    const ok = g.p99 < 100 && g.median < 100 && mem.rss < 300e6;
    return {
      name: NAME,
      figure: `gzip (as Prometheus): median ${g.median.toFixed(0)} ms, p99 ${g.p99.toFixed(0)} ms; identity: median ${p.median.toFixed(0)}, p99 ${p.p99.toFixed(0)} ms; busy fleet (gzip): median ${b.median.toFixed(0)}, max ${b.max.toFixed(0)} ms; RSS ${(mem.rss / 1e6).toFixed(0)} MB (busy ${(memBusy.rss / 1e6).toFixed(0)}, peak ${(memBusy.hwm / 1e6).toFixed(0)}, idle ${(memIdle.rss / 1e6).toFixed(0)} MB); idle CPU ${(idleCpu * 100).toFixed(0)} %`,
      target: TARGET,
      verdict: ok ? 'met' : 'MISSED',
      data: {
        ranks: total,
        // the headline (gzip) figures under the names scripts/bench.mjs compares with the record
        medianMs: g.median,
        p99Ms: g.p99,
        idleCpuFraction: idleCpu,
        rssBeforeScrapesBytes: memIdle.rss,
        gzip: { ...g, ms: gz, wireBytes: wire.gzip },
        identity: { ...p, ms: plain, wireBytes: wire.identity },
        busy: { ...b, ms: busy, scrapesBeforeAllRead: early },
        rssBytes: mem.rss,
        rssBusyBytes: memBusy.rss,
        peakRssBytes: memBusy.hwm,
        bodyBytes: text.length,
        bodyLines,
      },
    };
  } finally {
    await tw?.stop();
    tmp.cleanup();
  }
});
