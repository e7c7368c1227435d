// Pure detection: (run state, thresholds, now) → anomalies. No clock, no I/O: the shell passes
// `now` and the facts it observed (is .HALT there, is a pid alive), so the embedded watchdog,
// the metrics and the tests all see the same decisions.
import type { Thresholds } from '../config/settings.js';
import type { RankState } from '../state/rank.js';
import type { CsvState } from '../state/run.js';
import type { Liveness } from '../state/lifecycle.js';
import { kindOf, type AnomalyName } from './kinds.js';

/** One detected anomaly on one rank of a run. */
export interface Anomaly {
  kind: AnomalyName;
  rank: number;
  /** the observed value that crossed the threshold */
  value: number;
  threshold: number;
  /** one human sentence: the threshold crossing, not how much was read at once */
  message: string;
  /** trainer ts of the newest evidence; an acknowledgement at or after it hides the anomaly */
  evidenceTs?: number;
  /** kind-specific values for .anomaly.json (gate_collapse: the gate fields and their thresholds) */
  details?: Record<string, number | undefined>;
}

/** What detection needs to know about a run. */
export interface RunFacts {
  ranks: Iterable<RankState>;
  csv?: CsvState;
  /** .HALT exists: the trainer was asked to stop, so silence is expected. */
  halted: boolean;
  /** pid → alive on this host; only consulted when crash detection is on */
  pidAlive?: (pid: number) => boolean | undefined;
  /** whether the trainer runs (see state/lifecycle.ts); `exited` ends stall detection */
  liveness?: Liveness;
  /** an operator removed .HALT or .anomaly_type at this time: older evidence opens nothing */
  ackTs?: number;
  /** trainer ts of the newest training.csv row, its evidence time */
  csvTs?: number;
}

/** The stall threshold in force for a rank: raised to the startup grace between boot and first progress. */
export function effectiveStallS(s: RankState, t: Thresholds): number {
  const booting = s.bootTs !== undefined && s.lastProgressTs === undefined;
  return booting ? Math.max(t.stallS, t.startupGraceS) : t.stallS;
}

/** Why a rank's deadline is what it is. */
export type StallBasis = 'silence' | 'startup' | 'own_dump' | 'peer_dump';

/** When a rank counts as stalled if nothing new arrives, and why. */
export interface StallDeadline {
  /** seconds (trainer clock); in the past once stalled */
  at: number;
  basis: StallBasis;
  /** the silence or dump it is measured from */
  from: number;
}

/** Run-wide facts that every rank's deadline depends on; see stallDeadlines. */
interface StallContext {
  trains: boolean;
  /** newest liveness ts of any periodic writer */
  periodicNewest?: number;
  /** the smallest learned cadence of the periodic writers */
  periodicGap?: number;
}

/**
 * The liveness rules (docs/detection.md, "Liveness"). A periodic writer (progress, beats or
 * step_end since its boot) is stalled when silent past the stall threshold, or at once when
 * its own process's watchdog dumped after its last record. Before any rank of the run trains,
 * every rank is judged by silence under the startup grace, and dumps count for nothing (the
 * trainer's watchdog also dumps during a long compile). Once the run trains, a boot-only rank
 * is not judged by its own silence: synchronous DDP needs every rank for rank 0's next logging
 * step, so rank 0's progress proves it alive. Its dump counts only when the periodic writers
 * have been silent since before the dump, for longer than their cadence allows (3 gaps, at
 * least a third of the threshold). After an acknowledgement (.HALT removed) with nothing written
 * since, no deadline: the run waits for a new trainer, whose boot gets the startup grace. No
 * deadline when the trainer exited or .HALT is there.
 */
export function stallDeadlines(run: RunFacts, t: Thresholds): Map<number, StallDeadline> {
  const out = new Map<number, StallDeadline>();
  if (run.halted || run.liveness === 'exited') return out;
  const ranks = [...run.ranks];
  const ctx: StallContext = { trains: false };
  for (const s of ranks) {
    if (s.lastPeriodicTs === undefined) continue;
    ctx.trains = true;
    if (s.lastLivenessTs !== undefined && (ctx.periodicNewest === undefined || s.lastLivenessTs > ctx.periodicNewest)) ctx.periodicNewest = s.lastLivenessTs;
    if (s.periodicGapS !== undefined && (ctx.periodicGap === undefined || s.periodicGapS < ctx.periodicGap)) ctx.periodicGap = s.periodicGapS;
  }
  for (const s of ranks) {
    const d = rankDeadline(s, ctx, t, run.ackTs);
    if (d) out.set(s.rank, d);
  }
  return out;
}

function rankDeadline(s: RankState, ctx: StallContext, t: Thresholds, ackTs: number | undefined): StallDeadline | undefined {
  const last = s.lastLivenessTs;
  // Cleared for a resume, and nothing written since: the run waits for a new trainer, whose
  // boot then gets the startup grace. Stale records never make a stall again.
  if (ackTs !== undefined && (last === undefined || last <= ackTs)) return undefined;
  if (last === undefined) return undefined;
  const dump = s.lastDumpTs !== undefined && s.lastDumpTs > last && (ackTs === undefined || s.lastDumpTs > ackTs) ? s.lastDumpTs : undefined;
  if (!ctx.trains) return { at: last + Math.max(t.stallS, t.startupGraceS), basis: 'startup', from: last };
  if (s.lastPeriodicTs !== undefined) {
    if (dump !== undefined) return { at: dump, basis: 'own_dump', from: dump };
    return { at: last + t.stallS, basis: 'silence', from: last };
  }
  // Boot-only while the run trains: only a dump, confirmed by the periodic writers' silence.
  if (dump === undefined || ctx.periodicNewest === undefined || ctx.periodicNewest >= dump) return undefined;
  const window = Math.min(t.stallS, Math.max(t.stallS / 3, 3 * (ctx.periodicGap ?? t.stallS)));
  return { at: Math.max(dump, ctx.periodicNewest + window), basis: 'peer_dump', from: dump };
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
 * moments each piece covers. A piece whose value no later piece of the same peer goes below
 * (every piece, when steps only grow) may raise everything after it as well, which changes no
 * maximum: a point update, resolved by one prefix maximum at the end. Only the other pieces (a
 * restart's lower steps) take a segment-tree range update. Where a piece starts is found in a
 * bucket index of the sorted moments (sortedIndex). O(n·h·log n) for n ranks with h history
 * entries each, about O(n·h) when the moments are not skewed; no sort of all entries together.
 * At 4,096 ranks × 32 entries the two changes took the worst case (bench/step-lags.ts, "spread")
 * from 10–15 ms to about 4 ms per evaluation.
 */
export function stepLags(ranks: readonly RankState[]): Map<number, number> {
  const n = ranks.length;
  const asked: number[] = [];
  for (let i = 0; i < n; i++) if (ranks[i].step !== undefined && ranks[i].lastLivenessTs !== undefined) asked.push(i);
  const out = new Map<number, number>();
  const q = asked.length;
  if (q === 0) return out;
  const times = new Float64Array(q);
  for (let j = 0; j < q; j++) times[j] = ranks[asked[j]].lastLivenessTs!;
  times.sort();
  const locate = sortedIndex(times);
  // lead[q + j] and its ancestors: the largest peer step at times[j] (an iterative segment tree
  // whose inner nodes hold range updates; a point's value is the max along its path to the root).
  const lead = new Float64Array(2 * q).fill(-Infinity);
  // from[j]: the largest value raised on [j, q) (suffix raises); its prefix maximum at the end.
  const from = new Float64Array(q).fill(-Infinity);
  const raise = (a: number, b: number, v: number) => {
    for (let l = a + q, r = b + q; l < r; l >>= 1, r >>= 1) {
      if (l & 1) {
        lead[l] = Math.max(lead[l], v);
        l++;
      }
      if (r & 1) {
        r--;
        lead[r] = Math.max(lead[r], v);
      }
    }
  };
  // One peer's pieces (at most one per history entry), buffered so that each can be compared
  // with the lowest piece after it.
  let most = 0;
  for (let p = 0; p < n; p++) most = Math.max(most, ranks[p].stepHistory.length >> 1);
  const pa = new Int32Array(most);
  const pb = new Int32Array(most);
  const pv = new Float64Array(most);
  let count = 0;
  const piece = (a: number, b: number, v: number) => {
    pa[count] = a;
    pb[count] = b;
    pv[count++] = v;
  };
  for (let p = 0; p < n; p++) {
    count = 0;
    stepPieces(ranks[p].stepHistory, times, locate, piece);
    let lowestAfter = Infinity;
    for (let k = count - 1; k >= 0; k--) {
      const v = pv[k];
      if (v <= lowestAfter) {
        if (v > from[pa[k]]) from[pa[k]] = v;
      } else raise(pa[k], pb[k], v);
      if (v < lowestAfter) lowestAfter = v;
    }
  }
  for (let j = 1; j < q; j++) if (from[j - 1] > from[j]) from[j] = from[j - 1];
  for (let i = 0; i < n; i++) {
    const s = ranks[i];
    if (s.step === undefined || s.lastLivenessTs === undefined) continue;
    const j = locate(s.lastLivenessTs);
    let best = from[j];
    for (let k = j + q; k >= 1; k >>= 1) if (lead[k] > best) best = lead[k]!;
    out.set(s.rank, best > s.step ? best - s.step : 0);
  }
  return out;
}

/**
 * lowerBound over sorted `a` (the first index whose value is >= x, a.length if none), sped up
 * by an index of a.length buckets of equal width: a binary search within one bucket instead of
 * the whole array (about 130,000 searches per evaluation at 4,096 ranks; a full search's
 * mispredicted branches were most of its time). Skewed times only make a bucket larger, never
 * the answer wrong: the bucket of a value is a monotone function of it, so every index before
 * the bucket's start holds a smaller value and every index from the next bucket's on a larger one.
 */
function sortedIndex(a: Float64Array): (x: number) => number {
  const n = a.length;
  const lo = a[0];
  const hi = a[n - 1];
  const scale = hi > lo ? n / (hi - lo) : 0;
  const bucket = (x: number) => Math.min(n, Math.floor((x - lo) * scale));
  // start[b]: the first index whose bucket is >= b
  const start = new Int32Array(n + 2);
  let j = 0;
  for (let b = 0; b <= n + 1; b++) {
    while (j < n && bucket(a[j]) < b) j++;
    start[b] = j;
  }
  return (x) => {
    if (x <= lo) return 0;
    if (x > hi) return n;
    const b = bucket(x);
    let l = start[b];
    let r = start[b + 1];
    while (l < r) {
      const mid = (l + r) >> 1;
      if (a[mid] < x) l = mid + 1;
      else r = mid;
    }
    return l;
  };
}

/**
 * One rank's step-at-time as pieces: for T ascending, the entry in force is the newest (in push
 * order) with ts <= T, so it changes only where the newest index seen so far grows. Each piece
 * [from ts, to the next piece's ts) raises the lead of the asked moments it covers.
 */
function stepPieces(h: readonly number[], times: Float64Array, locate: (x: number) => number, raise: (from: number, to: number, v: number) => void): void {
  const m = h.length >> 1;
  if (m === 0) return;
  let sorted = true;
  for (let j = 1; j < m && sorted; j++) sorted = h[2 * j] >= h[2 * j - 2];
  let idx: number[] | undefined;
  if (!sorted) {
    idx = Array.from({ length: m }, (_, j) => j);
    idx.sort((a, b) => h[2 * a] - h[2 * b] || a - b);
  }
  const first = times[0];
  const last = times[times.length - 1];
  let best = -1;
  let from = -1; // index into times where the current piece starts
  for (let k = 0; k < m;) {
    const ts = h[2 * (idx ? idx[k] : k)];
    if (ts > last) break;
    // Entries with the same ts take effect together: the newest of them wins.
    let top = best;
    for (; k < m && h[2 * (idx ? idx[k] : k)] === ts; k++) top = Math.max(top, idx ? idx[k] : k);
    if (top <= best) continue;
    const at = ts <= first ? 0 : locate(ts);
    if (best >= 0 && from < at) raise(from, at, h[2 * best + 1]);
    best = top;
    from = at;
  }
  if (best >= 0 && from < times.length) raise(from, times.length, h[2 * best + 1]);
}

/** All anomalies of a run at time `now` (seconds), without those an acknowledgement hides. */
export function detectRun(run: RunFacts, t: Thresholds, now: number): Anomaly[] {
  const out: Anomaly[] = [];
  const ranks = [...run.ranks];
  const lags = t.stragglerSteps > 0 && ranks.length > 1 ? stepLags(ranks) : undefined;
  const deadlines = stallDeadlines({ ...run, ranks }, t);
  for (const s of ranks) detectRank(s, t, now, run, deadlines.get(s.rank), lags?.get(s.rank), out);
  if (run.csv && t.flatlineN > 0 && run.csv.throughputZero >= t.flatlineN) {
    out.push({
      kind: 'throughput_flatline',
      rank: 0,
      value: run.csv.throughputZero,
      threshold: t.flatlineN,
      message: `training.csv: toks_per_s <= 0 in ${t.flatlineN} rows in a row (NSA_WATCH_FLATLINE_N=${t.flatlineN})`,
      evidenceTs: run.csvTs,
    });
  }
  const ack = run.ackTs;
  const seen = ack === undefined ? out : out.filter((a) => a.evidenceTs === undefined || a.evidenceTs > ack);
  return run.halted ? seen.filter((a) => !kindOf(a.kind)?.quietWhileHalted) : seen;
}

/** The most important of a run's anomalies (kinds.ts priority, then the lowest rank). */
export function primaryOf<A extends { kind: string; rank?: number }>(anomalies: readonly A[]): A | undefined {
  let best: A | undefined;
  for (const a of anomalies) {
    if (!best) {
      best = a;
      continue;
    }
    const pa = kindOf(a.kind)?.priority ?? 99;
    const pb = kindOf(best.kind)?.priority ?? 99;
    if (pa < pb || (pa === pb && (a.rank ?? 0) < (best.rank ?? 0))) best = a;
  }
  return best;
}

const BASIS_TEXT: Record<StallBasis, string> = {
  silence: 'no heartbeat',
  startup: 'no heartbeat since boot (startup grace)',
  own_dump: "the trainer's own watchdog dumped stacks (hung training loop)",
  peer_dump: "this rank's watchdog dumped stacks and the ranks that log progress went silent before it",
};

function detectRank(s: RankState, t: Thresholds, now: number, run: RunFacts, d: StallDeadline | undefined, lag: number | undefined, out: Anomaly[]): void {
  const push = (kind: AnomalyName, value: number, threshold: number, message: string, evidenceTs?: number) =>
    out.push({ kind, rank: s.rank, value, threshold, message, evidenceTs });
  // Silence is a stall once strictly older than the threshold; a dump is evidence at once.
  const dumped = d !== undefined && (d.basis === 'own_dump' || d.basis === 'peer_dump');
  if (d && (dumped ? now >= d.at : now > d.at)) {
    const silent = now - (s.lastLivenessTs ?? d.from);
    const thr = d.basis === 'startup' ? Math.max(t.stallS, t.startupGraceS) : t.stallS;
    const text =
      d.basis === 'own_dump' || d.basis === 'peer_dump'
        ? `${BASIS_TEXT[d.basis]}; last liveness ${fmtAge(silent)} ago`
        : `${BASIS_TEXT[d.basis]} for more than ${thr}s (last ${fmtAge(silent)} ago)`;
    // Silence has no record to date it; it is new evidence by definition (the deadline already counts from an acknowledgement).
    push('heartbeat_stall', silent, thr, text, d.basis === 'own_dump' || d.basis === 'peer_dump' ? d.from : undefined);
  }
  if (t.crashDetect && s.endTs === undefined && s.pid !== undefined && run.pidAlive?.(s.pid) === false) {
    push('trainer_crash', s.pid, 0, `trainer pid ${s.pid} is gone and no .HALT asked it to stop`, s.lastLivenessTs);
  }
  const st = s.streaks;
  const at = s.lastProgressTs;
  if (t.flatlineN > 0 && st.throughputZero >= t.flatlineN)
    push(
      'throughput_flatline',
      st.throughputZero,
      t.flatlineN,
      `toks_per_s <= 0 in ${t.flatlineN} progress records in a row (NSA_WATCH_FLATLINE_N=${t.flatlineN})`,
      at,
    );
  if (t.lossFlatlineN > 0 && st.lossSame >= t.lossFlatlineN)
    push(
      'loss_flatline',
      st.lossSame,
      t.lossFlatlineN,
      `loss stuck at ${s.loss} in ${t.lossFlatlineN} progress records in a row (NSA_WATCH_LOSS_FLATLINE_N=${t.lossFlatlineN})`,
      at,
    );
  if (t.gradZeroN > 0 && st.gradZero >= t.gradZeroN)
    push('zero_grad', st.gradZero, t.gradZeroN, `grad_norm == 0 in ${t.gradZeroN} progress records in a row (NSA_WATCH_GRAD_ZERO_N=${t.gradZeroN})`, at);
  if (t.gateCollapseN > 0 && st.gateCollapse >= t.gateCollapseN) {
    push(
      'gate_collapse',
      st.gateCollapse,
      t.gateCollapseN,
      `gates collapsed in ${t.gateCollapseN} progress records in a row (NSA_WATCH_GATE_COLLAPSE_N=${t.gateCollapseN})`,
      at,
    );
    // What the original's gate_collapse_details.json held: the newest gate values and the limits.
    out[out.length - 1].details = {
      gate_entropy_mean: s.gateEntropyMean,
      gate_entropy_min: s.gateEntropyMin,
      gate_max_gate: s.gateMaxGate,
      gate_collapse_frac: s.gateCollapseFrac,
      threshold_gate_entropy_min: t.gateEntropyMin,
      threshold_gate_max: t.gateMaxThreshold,
      threshold_gate_collapse_frac: t.gateCollapseFrac,
    };
  }
  if (t.nonfiniteN > 0 && st.nonfinite >= t.nonfiniteN)
    push(
      'nonfinite_loss',
      st.nonfinite,
      t.nonfiniteN,
      `loss=${s.loss} grad_norm=${s.gradNorm}: not finite in ${t.nonfiniteN} progress record${t.nonfiniteN === 1 ? '' : 's'} in a row (NSA_WATCH_NONFINITE_N=${t.nonfiniteN})`,
      at,
    );
  if (
    t.fetchStallRatio > 0 &&
    s.dtFetchS !== undefined &&
    s.fetchBaseline !== undefined &&
    s.fetchSamples >= t.fetchWarmupN &&
    s.dtFetchS > t.fetchStallRatio * s.fetchBaseline
  ) {
    const ratio = s.fetchBaseline > 0 ? s.dtFetchS / s.fetchBaseline : Infinity;
    push(
      'fetch_stall',
      ratio,
      t.fetchStallRatio,
      `dt_fetch_s ${s.dtFetchS.toFixed(3)}s is more than ${t.fetchStallRatio}x its baseline ${s.fetchBaseline.toFixed(3)}s (NSA_WATCH_FETCH_STALL_RATIO)`,
      at,
    );
  }
  if (lag !== undefined && lag >= t.stragglerSteps) {
    push(
      'straggler',
      lag,
      t.stragglerSteps,
      `step ${s.step} is ${t.stragglerSteps} or more steps behind the most advanced rank at the same moment (NSA_WATCH_STRAGGLER_STEPS=${t.stragglerSteps})`,
      s.lastLivenessTs,
    );
  }
}

/**
 * The earliest future time at which a heartbeat stall would fire if nothing else arrives,
 * so that the shell can set one timer for exactly then. Undefined if none is pending.
 */
export function nextStallDeadline(run: RunFacts, t: Thresholds, now: number): number | undefined {
  let next: number | undefined;
  for (const d of stallDeadlines(run, t).values()) if (d.at >= now && (next === undefined || d.at < next)) next = d.at;
  return next;
}

function fmtAge(s: number): string {
  return s < 120 ? `${s.toFixed(1)}s` : s < 7200 ? `${(s / 60).toFixed(1)}m` : `${(s / 3600).toFixed(1)}h`;
}
