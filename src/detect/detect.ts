// Pure detection: (run state, thresholds, now) → anomalies. No clock, no I/O: the shell passes
// `now` and the facts it observed (is .HALT there, is a pid alive), so the embedded watchdog,
// the metrics and the tests all see the same decisions.
import type { Thresholds } from '../config/settings.js';
import type { RankState } from '../state/rank.js';
import type { CsvState } from '../state/run.js';
import { kindOf, type AnomalyName } from './kinds.js';

/** One detected anomaly on one rank of a run. */
export interface Anomaly {
  kind: AnomalyName;
  rank: number;
  /** the observed value that crossed the threshold */
  value: number;
  threshold: number;
  /** one human sentence */
  message: string;
}

/** What detection needs to know about a run. */
export interface RunFacts {
  ranks: Iterable<RankState>;
  csv?: CsvState;
  /** .HALT exists: the trainer was asked to stop, so silence is expected. */
  halted: boolean;
  /** pid → alive on this host; only consulted when crash detection is on */
  pidAlive?: (pid: number) => boolean | undefined;
}

/** The stall threshold in force for a rank: raised to the startup grace between boot and first progress. */
export function effectiveStallS(s: RankState, t: Thresholds): number {
  const booting = s.bootTs !== undefined && s.lastProgressTs === undefined;
  return booting ? Math.max(t.stallS, t.startupGraceS) : t.stallS;
}

/**
 * How many steps each rank is behind the most advanced peer, compared at the same moment: the
 * rank's newest record time. Comparing the newest steps instead would flag whichever rank's file
 * happened to be read last, and a hung rank (a stall, not a straggler) would look far behind.
 *
 * A peer's step at time T is the step of its newest history entry (in push order) whose ts <= T.
 * Asking that of every peer for every rank is O(ranks²): 20k ranks took minutes. Instead the
 * moments asked about (each rank's newest time) are sorted once, and each peer's step-at-time,
 * a step function with at most one piece per history entry, raises the lead of the range of
 * moments each piece covers (two binary searches and a segment-tree range update).
 * O(n·h·log n) for n ranks with h history entries each; no sort of all entries together.
 */
export function stepLags(ranks: readonly RankState[]): Map<number, number> {
  const n = ranks.length;
  const asked: number[] = [];
  for (let i = 0; i < n; i++) if (ranks[i]!.step !== undefined && ranks[i]!.lastLivenessTs !== undefined) asked.push(i);
  const out = new Map<number, number>();
  const q = asked.length;
  if (q === 0) return out;
  const times = new Float64Array(q);
  for (let j = 0; j < q; j++) times[j] = ranks[asked[j]!]!.lastLivenessTs!;
  times.sort();
  // lead[q + j] and its ancestors: the largest peer step at times[j] (an iterative segment tree
  // whose inner nodes hold range updates; a point's value is the max along its path to the root).
  const lead = new Float64Array(2 * q).fill(-Infinity);
  let everywhere = -Infinity; // raises of the whole range, the common case, cost O(1)
  const raise = (from: number, to: number, v: number) => {
    if (from === 0 && to === q) {
      if (v > everywhere) everywhere = v;
      return;
    }
    for (let l = from + q, r = to + q; l < r; l >>= 1, r >>= 1) {
      if (l & 1) lead[l] = Math.max(lead[l]!, v), l++;
      if (r & 1) --r, (lead[r] = Math.max(lead[r]!, v));
    }
  };
  for (let p = 0; p < n; p++) stepPieces(ranks[p]!.stepHistory, times, raise);
  for (let i = 0; i < n; i++) {
    const s = ranks[i]!;
    if (s.step === undefined || s.lastLivenessTs === undefined) continue;
    let best = everywhere;
    for (let k = lowerBound(times, s.lastLivenessTs) + q; k >= 1; k >>= 1) if (lead[k]! > best) best = lead[k]!;
    out.set(s.rank, best > s.step ? best - s.step : 0);
  }
  return out;
}

/** The first index of sorted `a` whose value is >= x (a.length if none). */
function lowerBound(a: Float64Array, x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * One rank's step-at-time as pieces: for T ascending, the entry in force is the newest (in push
 * order) with ts <= T, so it changes only where the newest index seen so far grows. Each piece
 * [from ts, to the next piece's ts) raises the lead of the asked moments it covers.
 */
function stepPieces(h: readonly number[], times: Float64Array, raise: (from: number, to: number, v: number) => void): void {
  const m = h.length >> 1;
  if (m === 0) return;
  let sorted = true;
  for (let j = 1; j < m && sorted; j++) sorted = h[2 * j]! >= h[2 * j - 2]!;
  let idx: number[] | undefined;
  if (!sorted) {
    idx = Array.from({ length: m }, (_, j) => j);
    idx.sort((a, b) => h[2 * a]! - h[2 * b]! || a - b);
  }
  const first = times[0]!;
  const last = times[times.length - 1]!;
  let best = -1;
  let from = -1; // index into times where the current piece starts
  for (let k = 0; k < m; ) {
    const ts = h[2 * (idx ? idx[k]! : k)]!;
    if (ts > last) break;
    // Entries with the same ts take effect together: the newest of them wins.
    let top = best;
    for (; k < m && h[2 * (idx ? idx[k]! : k)]! === ts; k++) top = Math.max(top, idx ? idx[k]! : k);
    if (top <= best) continue;
    const at = ts <= first ? 0 : lowerBound(times, ts);
    if (best >= 0 && from < at) raise(from, at, h[2 * best + 1]!);
    best = top;
    from = at;
  }
  if (best >= 0 && from < times.length) raise(from, times.length, h[2 * best + 1]!);
}

/** All anomalies of a run at time `now` (seconds). */
export function detectRun(run: RunFacts, t: Thresholds, now: number): Anomaly[] {
  const out: Anomaly[] = [];
  const ranks = [...run.ranks];
  const lags = t.stragglerSteps > 0 && ranks.length > 1 ? stepLags(ranks) : undefined;
  for (const s of ranks) detectRank(s, t, now, run, lags?.get(s.rank), out);
  if (run.csv && t.flatlineN > 0 && run.csv.throughputZero >= t.flatlineN) {
    out.push({ kind: 'throughput_flatline', rank: 0, value: run.csv.throughputZero, threshold: t.flatlineN, message: `training.csv: ${run.csv.throughputZero} rows in a row with toks_per_s <= 0` });
  }
  return run.halted ? out.filter((a) => !kindOf(a.kind)?.quietWhileHalted) : out;
}

function detectRank(s: RankState, t: Thresholds, now: number, run: RunFacts, lag: number | undefined, out: Anomaly[]): void {
  const push = (kind: AnomalyName, value: number, threshold: number, message: string) => out.push({ kind, rank: s.rank, value, threshold, message });
  const stallS = effectiveStallS(s, t);
  if (s.lastDumpTs !== undefined && (s.lastLivenessTs === undefined || s.lastDumpTs > s.lastLivenessTs)) {
    const age = s.lastLivenessTs === undefined ? 0 : now - s.lastLivenessTs;
    push('heartbeat_stall', age, stallS, `the trainer's own watchdog dumped stacks (hung training loop); last liveness ${fmtAge(age)} ago`);
  } else if (s.lastLivenessTs !== undefined && now - s.lastLivenessTs > stallS) {
    push('heartbeat_stall', now - s.lastLivenessTs, stallS, `no heartbeat for ${fmtAge(now - s.lastLivenessTs)} (threshold ${stallS}s)`);
  }
  if (t.crashDetect && s.pid !== undefined && run.pidAlive?.(s.pid) === false) {
    push('trainer_crash', s.pid, 0, `trainer pid ${s.pid} is gone and no .HALT asked it to stop`);
  }
  const st = s.streaks;
  if (t.flatlineN > 0 && st.throughputZero >= t.flatlineN) push('throughput_flatline', st.throughputZero, t.flatlineN, `${st.throughputZero} progress records in a row with toks_per_s <= 0`);
  if (t.lossFlatlineN > 0 && st.lossSame >= t.lossFlatlineN) push('loss_flatline', st.lossSame, t.lossFlatlineN, `loss stuck at ${s.loss} for ${st.lossSame} progress records`);
  if (t.gradZeroN > 0 && st.gradZero >= t.gradZeroN) push('zero_grad', st.gradZero, t.gradZeroN, `grad_norm == 0 for ${st.gradZero} progress records`);
  if (t.gateCollapseN > 0 && st.gateCollapse >= t.gateCollapseN) push('gate_collapse', st.gateCollapse, t.gateCollapseN, `gates collapsed for ${st.gateCollapse} progress records`);
  if (t.nonfiniteN > 0 && st.nonfinite >= t.nonfiniteN) push('nonfinite_loss', st.nonfinite, t.nonfiniteN, `loss=${s.loss} grad_norm=${s.gradNorm}: not finite for ${st.nonfinite} progress records`);
  if (t.fetchStallRatio > 0 && s.dtFetchS !== undefined && s.fetchBaseline !== undefined && s.fetchSamples >= t.fetchWarmupN && s.dtFetchS > t.fetchStallRatio * s.fetchBaseline) {
    const ratio = s.fetchBaseline > 0 ? s.dtFetchS / s.fetchBaseline : Infinity;
    push('fetch_stall', ratio, t.fetchStallRatio, `dt_fetch_s ${s.dtFetchS.toFixed(3)}s is ${ratio.toFixed(1)}x its baseline ${s.fetchBaseline.toFixed(3)}s`);
  }
  if (lag !== undefined && lag >= t.stragglerSteps) {
    push('straggler', lag, t.stragglerSteps, `step ${s.step} is ${lag} steps behind the most advanced rank at the same moment`);
  }
}

/**
 * The earliest future time at which a heartbeat stall would fire if nothing else arrives,
 * so that the shell can set one timer for exactly then. Undefined if none is pending.
 */
export function nextStallDeadline(run: RunFacts, t: Thresholds, now: number): number | undefined {
  if (run.halted) return undefined;
  let next: number | undefined;
  for (const s of run.ranks) {
    if (s.lastLivenessTs === undefined) continue;
    const at = s.lastLivenessTs + effectiveStallS(s, t);
    if (at >= now && (next === undefined || at < next)) next = at;
  }
  return next;
}

function fmtAge(s: number): string {
  return s < 120 ? `${s.toFixed(1)}s` : s < 7200 ? `${(s / 60).toFixed(1)}m` : `${(s / 3600).toFixed(1)}h`;
}
