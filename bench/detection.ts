// Benchmark 5: detection latency of the real trainwatch process (--halt 1), from the moment
// a threshold is crossed to `.anomaly_type` and `.HALT` existing on disk.
// - stall (NSA_WATCH_HEARTBEAT_STALL_S=2): the crossing is the last heartbeat's ts + 2 s.
// - flatline (NSA_WATCH_FLATLINE_N=5): the crossing is the write of the 5th consecutive
//   progress record with toks_per_s 0 (the moment the append returned).
// Each trial uses a fresh run directory under one --root; the run is first made visible (one
// normal record, seen in /metrics) so discovery of the new directory is not counted.
// The bench process polls for the files every ~1 ms. Target: ≤ 1 s past the threshold.
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchTmp, median, prng, progressRecord, pyDumps, runMain, say, seriesValue, sleep, startTw, wallS, type Row } from './lib.js';

const NAME = 'detection latency';
const TARGET = '≤ 1 s past threshold';
const STALL_S = 2;
const FLATLINE_N = 5;
const TRIALS = 3;
const WAIT_S = 10;

interface Seen {
  anomaly: number;
  halt: number;
  kind: string;
}

/** Wall time (s) at which each control file was first seen, polling ~every ms. */
async function watchFor(dir: string, deadline: number): Promise<Seen> {
  const a = join(dir, '.anomaly_type');
  const h = join(dir, '.HALT');
  let anomaly = NaN;
  let halt = NaN;
  while (wallS() < deadline && (Number.isNaN(anomaly) || Number.isNaN(halt))) {
    const now = wallS();
    if (Number.isNaN(anomaly) && existsSync(a)) anomaly = now;
    if (Number.isNaN(halt) && existsSync(h)) halt = now;
    await new Promise((r) => setImmediate(r));
    await sleep(1);
  }
  const kind = existsSync(a) ? readFileSync(a, 'utf8').trim() : '(none)';
  return { anomaly, halt, kind };
}

runMain(NAME, TARGET, async (): Promise<Row> => {
  const tmp = benchTmp('detect');
  let tw: Awaited<ReturnType<typeof startTw>> | undefined;
  try {
    tw = await startTw(['--root', tmp.path, '--halt', '1'], {
      NSA_WATCH_HEARTBEAT_STALL_S: String(STALL_S),
      NSA_WATCH_FLATLINE_N: String(FLATLINE_N),
    });
    const rnd = prng(11);
    let step = 1000;
    // progressRecord() adds 0.31 s to ts: the record's ts is the moment it is built.
    const rec = (rank: number, toks?: number) => pyDumps(progressRecord({ rank, pid: 4321, step: ++step, ts: wallS() - 0.31, rnd, toks })) + '\n';
    const makeVisible = async (name: string): Promise<string> => {
      const dir = join(tmp.path, name);
      mkdirSync(dir);
      appendFileSync(join(dir, 'heartbeat_rank0.jsonl'), rec(0));
      const series = `trainwatch_run_ranks{run="${name}"}`;
      for (let i = 0; i < 500; i++) {
        if (seriesValue(await (await fetch(`${tw!.url}/metrics`)).text(), series) === 1) return dir;
        await sleep(10);
      }
      throw new Error(`run ${name} never showed up in /metrics`);
    };
    const stall: { anomaly: number; halt: number }[] = [];
    const flat: { anomaly: number; halt: number }[] = [];
    for (let i = 0; i < TRIALS; i++) {
      // Stall: a few heartbeats, then silence.
      const dir = await makeVisible(`stall${i}`);
      const file = join(dir, 'heartbeat_rank0.jsonl');
      let last = 0;
      for (let k = 0; k < 4; k++) {
        await sleep(200);
        const line = rec(0);
        appendFileSync(file, line);
        last = (JSON.parse(line) as { ts: number }).ts; // the trainer's clock is ours here
      }
      const cross = last + STALL_S;
      const seen = await watchFor(dir, cross + WAIT_S);
      if (seen.kind !== 'heartbeat_stall') throw new Error(`stall trial ${i}: .anomaly_type is ${seen.kind}`);
      stall.push({ anomaly: seen.anomaly - cross, halt: seen.halt - cross });
      say(`stall trial ${i + 1}: .anomaly_type ${ms(seen.anomaly - cross)} and .HALT ${ms(seen.halt - cross)} after last heartbeat + ${STALL_S} s`);
    }
    for (let i = 0; i < TRIALS; i++) {
      // Flatline: zero-throughput progress records 150 ms apart; the Nth one crosses.
      const dir = await makeVisible(`flat${i}`);
      const file = join(dir, 'heartbeat_rank0.jsonl');
      let cross = 0;
      for (let k = 1; k <= FLATLINE_N; k++) {
        await sleep(150);
        appendFileSync(file, rec(0, 0));
        cross = wallS();
      }
      const seen = await watchFor(dir, cross + WAIT_S);
      if (seen.kind !== 'throughput_flatline') throw new Error(`flatline trial ${i}: .anomaly_type is ${seen.kind}`);
      flat.push({ anomaly: seen.anomaly - cross, halt: seen.halt - cross });
      say(
        `flatline trial ${i + 1}: .anomaly_type ${ms(seen.anomaly - cross)} and .HALT ${ms(seen.halt - cross)} after the ${FLATLINE_N}th zero record was written`,
      );
    }
    const worst = (xs: { anomaly: number; halt: number }[]) => Math.max(...xs.flatMap((x) => [x.anomaly, x.halt]));
    const med = (xs: { anomaly: number; halt: number }[], k: 'anomaly' | 'halt') => median(xs.map((x) => x[k]));
    const ws = worst(stall);
    const wf = worst(flat);
    say(`stall: median .anomaly_type ${ms(med(stall, 'anomaly'))}, .HALT ${ms(med(stall, 'halt'))}; worst ${ms(ws)}`);
    say(`flatline: median .anomaly_type ${ms(med(flat, 'anomaly'))}, .HALT ${ms(med(flat, 'halt'))}; worst ${ms(wf)}`);
    const ok = Number.isFinite(ws) && Number.isFinite(wf) && ws <= 1 && wf <= 1;
    return {
      name: NAME,
      figure: `stall ${ms(med(stall, 'anomaly'))} (worst ${ms(ws)}), flatline ${ms(med(flat, 'anomaly'))} (worst ${ms(wf)}) to .anomaly_type/.HALT`,
      target: TARGET,
      verdict: ok ? 'met' : 'MISSED',
      data: { stall, flat, worstStallS: ws, worstFlatlineS: wf, stallThresholdS: STALL_S, flatlineN: FLATLINE_N },
    };
  } finally {
    await tw?.stop();
    tmp.cleanup();
  }
});

function ms(s: number): string {
  return Number.isNaN(s) ? 'never' : `${(s * 1000).toFixed(0)} ms`;
}
