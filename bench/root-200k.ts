// Benchmark: one --root of 200,000 heartbeat files (25,000 runs × 8 ranks), the shared root of a
// busy cluster: 96 % of the runs finished two days ago (older than --run.ttl-s: expired, their
// files still watched), 4 % quiet for an hour (judged and exported). No writes: the cost of
// watching alone.
// Measured on the real process (`--mode alertmanager`, so nothing is written into the fixture):
//   - time to the first full pass: spawn → /readyz, which answers 200 once every file that
//     existed at startup was read;
//   - steady state, STEADY_S seconds from READY_SETTLE_S after ready: CPU share (utime+stime /
//     wall from /proc), RSS (VmRSS, peak VmHWM), open descriptors (/proc/<pid>/fd);
//   - then one scrape (plain text, streamed and counted here, not kept): its time, size, the
//     trainwatch_files_watched / trainwatch_files_open figures, and RSS after it.
// TW_BENCH_ROOT_FILES sets the number of files (a multiple of 8; 10,000 for the small variant).
// Target (issue 11): none given beyond "covered"; reported: RSS, fds, CPU, first pass.
import { mkdirSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { benchTmp, bootLine, cpuSecondsOf, memOf, prng, runMain, say, sleep, startTw, stepLines, type Row, type Tw } from './lib.js';

const FILES = Number(process.env.TW_BENCH_ROOT_FILES ?? 200_000);
const RANKS = 8;
const RUNS = Math.ceil(FILES / RANKS);
const NAME = `--root of ${FILES.toLocaleString('en')} files`;
const TARGET = 'reported: RSS, fds, CPU, first pass';
const RECENT_EVERY = 25; // one run in 25 (4 %) quiet for an hour, the rest two days old
const READY_SETTLE_S = 10;
const STEADY_S = 20;

/** Streams GET /metrics and counts it; returns the size, time and the values of `names` (label-less series). */
function countScrape(url: string, names: string[]): Promise<{ ms: number; bytes: number; lines: number; values: Record<string, number> }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const values: Record<string, number> = {};
    let bytes = 0;
    let lines = 0;
    let partial = '';
    const req = get(`${url}/metrics`, (res) => {
      res.setEncoding('latin1');
      res.on('data', (d: string) => {
        bytes += d.length;
        const ls = (partial + d).split('\n');
        partial = ls.pop()!;
        lines += ls.length;
        for (const l of ls) if (l.startsWith('trainwatch_')) for (const n of names) if (l.startsWith(`${n} `)) values[n] = Number(l.slice(n.length + 1));
      });
      res.on('end', () => resolve({ ms: performance.now() - t0, bytes, lines, values }));
      res.on('error', reject);
    });
    req.setTimeout(120_000, () => req.destroy(new Error('scrape timed out after 120 s')));
    req.on('error', reject);
  });
}

const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const mb = (b: number) => `${(b / 1e6).toFixed(0)} MB`;

runMain(NAME, TARGET, async (): Promise<Row> => {
  const tmp = benchTmp('root200k');
  let tw: Tw | undefined;
  try {
    const rnd = prng(9);
    const now = Date.now() / 1000;
    const t0 = performance.now();
    let recent = 0;
    for (let r = 0; r < RUNS; r++) {
      const dir = join(tmp.path, `run${String(r).padStart(5, '0')}`);
      mkdirSync(dir);
      const age = r % RECENT_EVERY === 0 ? 3600 : 2 * 86400;
      if (age === 3600) recent++;
      const ts = now - age;
      for (let k = 0; k < RANKS && r * RANKS + k < FILES; k++) {
        const pid = 100_000 + r * RANKS + k;
        const f = join(dir, `heartbeat_rank${k}.jsonl`);
        writeFileSync(f, bootLine(k, pid, ts - 60) + stepLines({ rank: k, pid, step: 100, ts, rnd }));
        utimesSync(f, ts, ts);
      }
    }
    say(
      `fixture: ${RUNS} runs × ${RANKS} ranks = ${FILES} files (${recent} runs quiet for an hour, the rest two days old), written in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    const t1 = performance.now();
    tw = await startTw(['--root', tmp.path, '--mode', 'alertmanager'], {}, 170_000);
    const firstPassS = (performance.now() - t1) / 1000;
    const memReady = memOf(tw.pid);
    const fdsReady = fds(tw.pid);
    say(`first full pass (spawn → /readyz): ${firstPassS.toFixed(1)} s; then RSS ${mb(memReady.rss)} (peak ${mb(memReady.hwm)}), ${fdsReady} open descriptors`);
    await sleep(READY_SETTLE_S * 1000);
    const c0 = cpuSecondsOf(tw.pid);
    const w0 = performance.now();
    let fdsMax = 0;
    for (let i = 0; i < STEADY_S; i++) {
      await sleep(1000);
      fdsMax = Math.max(fdsMax, fds(tw.pid));
    }
    const cpu = (cpuSecondsOf(tw.pid) - c0) / ((performance.now() - w0) / 1000);
    const mem = memOf(tw.pid);
    const fdsNow = fds(tw.pid);
    say(
      `steady state (${STEADY_S} s from ${READY_SETTLE_S} s after ready, no writes, no scrapes): CPU ${(cpu * 100).toFixed(1)} % of a core; RSS ${mb(mem.rss)} (peak ${mb(mem.hwm)}); ${fdsNow} open descriptors (max ${fdsMax})`,
    );
    const s = await countScrape(tw.url, ['trainwatch_files_watched', 'trainwatch_files_open', 'trainwatch_runs_watched', 'trainwatch_lines_read_total']);
    const memAfter = memOf(tw.pid);
    say(
      `one scrape: ${s.ms.toFixed(0)} ms, ${(s.bytes / 2 ** 20).toFixed(1)} MiB, ${s.lines} lines; files watched ${s.values.trainwatch_files_watched}, open ${s.values.trainwatch_files_open}, runs ${s.values.trainwatch_runs_watched}, lines read ${s.values.trainwatch_lines_read_total}; RSS after ${mb(memAfter.rss)}`,
    );
    const polling = /falling back to polling/.test(tw.logs());
    if (polling) say('note: trainwatch ran out of inotify watches and polls (its log says so): the figures are of polling');
    if (s.values.trainwatch_files_watched !== FILES) throw new Error(`trainwatch watches ${s.values.trainwatch_files_watched} files of ${FILES}`);
    return {
      name: NAME,
      figure: `first pass ${firstPassS.toFixed(1)} s; steady: CPU ${(cpu * 100).toFixed(1)} % of a core, RSS ${mb(mem.rss)} (peak ${mb(mem.hwm)}), ${fdsNow} fds (files open ${s.values.trainwatch_files_open}); a scrape ${s.ms.toFixed(0)} ms, ${(s.bytes / 2 ** 20).toFixed(1)} MiB`,
      target: TARGET,
      verdict: 'met',
      data: {
        files: FILES,
        runs: RUNS,
        recentRuns: recent,
        firstPassS,
        cpuFraction: cpu,
        rssBytes: mem.rss,
        peakRssBytes: mem.hwm,
        rssReadyBytes: memReady.rss,
        rssAfterScrapeBytes: memAfter.rss,
        fds: fdsNow,
        fdsMax,
        fdsReady,
        filesOpen: s.values.trainwatch_files_open,
        scrapeMs: s.ms,
        scrapeBytes: s.bytes,
        linesRead: s.values.trainwatch_lines_read_total,
        polling,
      },
    };
  } finally {
    await tw?.stop();
    tmp.cleanup();
  }
});
