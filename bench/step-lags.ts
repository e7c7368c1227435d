// Benchmark: straggler evaluation (stepLags) for one run with many ranks, in process.
// - healthy 4,096: every rank has a full step history (per-step beats), newest times within 1 s;
// - spread 4,096: the newest times spread over the whole history span, so every step change
//   lies between two ranks' newest times (the sweep's worst case);
// - hostile 20,000: one heartbeat file whose records carry 20,000 distinct ranks, one record
//   each (issue 11 row 3: 131 s per evaluation with the old all-pairs loop).
// Target (issue 11): < 5 ms per evaluation at 4,096 ranks. Median CPU time of ROUNDS evaluations.
import { stepLags } from '../src/detect/detect.js';
import { newRankState, reduce, STEP_HISTORY, type RankState } from '../src/state/rank.js';
import { median, prng, runMain, say, type Row } from './lib.js';

const NAME = 'straggler evaluation';
const TARGET = '< 5 ms at 4,096 ranks';
const ROUNDS = 25;
const P = { gateEntropyMin: 0.2, gateMaxThreshold: 0.9, gateCollapseFrac: 0.5, fetchStallRatio: 3, fetchWarmupN: 5 };

function run(n: number, records: number, spreadS: number, seed: number): RankState[] {
  const rnd = prng(seed);
  const out: RankState[] = [];
  for (let rank = 0; rank < n; rank++) {
    const s = newRankState(rank);
    const offset = rnd() * spreadS;
    for (let i = 0; i < records; i++) reduce(s, { ts: 1e9 + offset + i, rank, step: i, msg: 'beat' }, P);
    out.push(s);
  }
  return out;
}

/** Median CPU milliseconds per evaluation (CPU, not wall: other processes on a shared machine inflate wall time). */
function timeIt(ranks: RankState[]): number {
  for (let i = 0; i < 3; i++) stepLags(ranks); // warm-up: optimised code
  const ms: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const c0 = process.cpuUsage();
    stepLags(ranks);
    const c = process.cpuUsage(c0);
    ms.push((c.user + c.system) / 1000);
  }
  return median(ms);
}

runMain(NAME, TARGET, async (): Promise<Row> => {
  const cases = {
    healthy4096: run(4096, STEP_HISTORY, 1, 1),
    spread4096: run(4096, STEP_HISTORY, STEP_HISTORY, 2),
    hostile20000: run(20_000, 1, 0.5, 3),
  };
  const data: Record<string, number> = {};
  for (const [name, ranks] of Object.entries(cases)) {
    data[`${name}_ms`] = Number(timeIt(ranks).toFixed(2));
    say(`${name}: ${data[`${name}_ms`]} ms CPU per evaluation (median of ${ROUNDS})`);
  }
  const worst4096 = Math.max(data.healthy4096_ms, data.spread4096_ms);
  return {
    name: NAME,
    figure: `${data.healthy4096_ms} ms (4,096 healthy), ${data.spread4096_ms} ms (4,096 spread), ${data.hostile20000_ms} ms (20,000 hostile)`,
    target: TARGET,
    verdict: worst4096 < 5 ? 'met' : 'MISSED',
    data,
  };
});
