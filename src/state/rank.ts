// Per-rank state and its reducer: (state, record) → state. Deterministic: no clock, no I/O.
// For ingest speed the reducer updates the state object in place and returns it; callers
// that need the previous value take a copy (cloneRankState) first. Memory per rank is
// bounded: counters, the newest values, and a fixed-size throughput history.
import type { HeartbeatRecord } from '../parse/line.js';

/** The msg kinds counted separately; anything else is counted as `other` (bounded labels). */
export const MSG_CLASSES = [
  'boot',
  'beat',
  'progress',
  'step_end',
  'watchdog_dump',
  'run_end',
  'fineweb_loader_ready',
  'fineweb_loader_error',
  'other',
] as const;
export type MsgClass = (typeof MSG_CLASSES)[number];

/** How many recent toks_per_s values the status page's sparkline keeps. */
export const TOKS_HISTORY = 40;
/** The record kinds that a trainer writes at a cadence: a rank that wrote one is a periodic writer. */
export const PERIODIC_MSGS: ReadonlySet<string> = new Set(['progress', 'beat', 'step_end']);

/**
 * What a rank's silence means. `periodic`: it writes progress, beats or step_end at a cadence,
 * so silence past the threshold is a stall. `boot_only`: since its newest boot it wrote nothing
 * periodic (ranks >= 1 of the real trainer by default): silent by design, judged through the run.
 */
export type RankRole = 'periodic' | 'boot_only';

/** How many recent step changes are kept, to compare ranks' steps at the same moment. */
export const STEP_HISTORY = 32;

/** Consecutive-record counts that detection compares with thresholds. */
export interface Streaks {
  /** progress records in a row with toks_per_s <= 0 */
  throughputZero: number;
  /** progress records in a row with the identical (finite) loss */
  lossSame: number;
  /** progress records in a row with grad_norm == 0 */
  gradZero: number;
  /** progress records in a row with collapsed gates */
  gateCollapse: number;
  /** progress records in a row with a NaN/±Inf loss or grad_norm */
  nonfinite: number;
}

/** Everything trainwatch knows about one rank of one run. */
export interface RankState {
  rank: number;
  /** the pid of the newest liveness record (watchdog_dump records never change it) */
  pid?: number;
  /** trainer ts of the first record seen from the current pid */
  pidSinceTs?: number;
  /** trainer ts of the boot record of the current pid, if it was read */
  pidBootTs?: number;
  /** trainer ts of the newest periodic record (progress, beat, step_end) since the newest boot */
  lastPeriodicTs?: number;
  /** smoothed seconds between progress (or beat) records: the rank's learned cadence */
  periodicGapS?: number;
  /** trainer ts of the newest progress or beat record, for the cadence */
  lastCadenceTs?: number;
  /** trainer ts of an explicit end record (`msg: "run_end"`) of the current pid */
  endTs?: number;
  /** trainer ts of the newest liveness record (anything but watchdog_dump) */
  lastLivenessTs?: number;
  /** trainer ts of the newest watchdog_dump record */
  lastDumpTs?: number;
  /** trainer ts of the newest boot record */
  bootTs?: number;
  /** trainer ts of the newest progress record */
  lastProgressTs?: number;
  step?: number;
  /** trainer ts at which the step last changed */
  stepChangedTs?: number;
  /** recent step changes, oldest first: [ts, step, ts, step, …] */
  stepHistory: number[];
  loss?: number;
  toksPerS?: number;
  gradNorm?: number;
  dtFetchS?: number;
  /** the baseline dt_fetch_s was compared against (before this sample) */
  fetchBaseline?: number;
  fetchSamples: number;
  gpuMemAllocMiB?: number;
  gpuMemReservedMiB?: number;
  gateEntropyMean?: number;
  gateEntropyMin?: number;
  gateMaxGate?: number;
  gateCollapseFrac?: number;
  streaks: Streaks;
  records: Record<MsgClass, number>;
  toksHistory: number[];
}

/** The reducer's parameters (from the thresholds) that classify a single record. */
export interface ReduceParams {
  gateEntropyMin: number;
  gateMaxThreshold: number;
  gateCollapseFrac: number;
  fetchStallRatio: number;
  fetchWarmupN: number;
}

/** EWMA weight of a new gap between periodic records. */
const GAP_EWMA_ALPHA = 0.2;

/** EWMA weight of a new normal dt_fetch_s sample once the warm-up is over. */
const FETCH_EWMA_ALPHA = 0.1;

/** A fresh state for a rank. */
export function newRankState(rank: number): RankState {
  return {
    rank,
    fetchSamples: 0,
    streaks: { throughputZero: 0, lossSame: 0, gradZero: 0, gateCollapse: 0, nonfinite: 0 },
    records: Object.fromEntries(MSG_CLASSES.map((m) => [m, 0])) as Record<MsgClass, number>,
    toksHistory: [],
    stepHistory: [],
  };
}

/** The rank's role now (see RankRole). */
export function rankRole(s: RankState): RankRole {
  return s.lastPeriodicTs !== undefined ? 'periodic' : 'boot_only';
}

/** Forgets what belonged to the rank's previous process: its dumps, cadence and end record. */
function forgetProcess(s: RankState): void {
  s.lastDumpTs = undefined;
  s.lastPeriodicTs = undefined;
  s.periodicGapS = undefined;
  s.lastCadenceTs = undefined;
  s.endTs = undefined;
}

/** A deep copy, for callers that need the state before a reduce. */
export function cloneRankState(s: RankState): RankState {
  return { ...s, streaks: { ...s.streaks }, records: { ...s.records }, toksHistory: [...s.toksHistory], stepHistory: [...s.stepHistory] };
}

/** Applies one record to the rank's state. */
export function reduce(s: RankState, r: HeartbeatRecord, p: ReduceParams): RankState {
  const cls: MsgClass = (MSG_CLASSES as readonly string[]).includes(r.msg) ? (r.msg as MsgClass) : 'other';
  s.records[cls]++;
  if (cls === 'watchdog_dump') {
    // The trainer's own hang detector: evidence of a stall, never a sign of life. Only a dump
    // of the process the rank's records come from counts: a stale process writing into the
    // same directory says nothing about the new trainer.
    if (r.pid !== undefined && s.pid !== undefined && r.pid !== s.pid) return s;
    if (s.lastDumpTs === undefined || r.ts > s.lastDumpTs) s.lastDumpTs = r.ts;
    return s;
  }
  if (r.pid !== undefined && r.pid !== s.pid) {
    s.pid = r.pid;
    s.pidSinceTs = r.ts;
    s.pidBootTs = undefined;
    // A new process: the old one's dumps and cadence are not its own.
    forgetProcess(s);
  }
  if (s.lastLivenessTs === undefined || r.ts >= s.lastLivenessTs) s.lastLivenessTs = r.ts;
  if (s.step === undefined || r.step !== s.step) {
    if (s.step === undefined || r.step > s.step || cls === 'boot') s.stepChangedTs = r.ts;
    s.step = r.step;
    s.stepHistory.push(r.ts, r.step);
    if (s.stepHistory.length > 2 * STEP_HISTORY) s.stepHistory.splice(0, 2);
  }
  if (r.gpu_mem_alloc !== undefined) s.gpuMemAllocMiB = r.gpu_mem_alloc;
  if (r.gpu_mem_reserved !== undefined) s.gpuMemReservedMiB = r.gpu_mem_reserved;
  if (PERIODIC_MSGS.has(r.msg)) {
    // step_end follows its progress record at once: only progress and beats teach the cadence.
    if (cls !== 'step_end') {
      if (s.lastCadenceTs !== undefined && r.ts > s.lastCadenceTs) {
        const gap = r.ts - s.lastCadenceTs;
        s.periodicGapS = s.periodicGapS === undefined ? gap : s.periodicGapS + GAP_EWMA_ALPHA * (gap - s.periodicGapS);
      }
      s.lastCadenceTs = r.ts;
    }
    s.lastPeriodicTs = r.ts;
  }
  if (cls === 'run_end') s.endTs = r.ts;
  if (cls === 'boot') {
    // A (re)started trainer: streaks of the previous process no longer apply.
    s.bootTs = r.ts;
    s.pidBootTs = r.ts;
    s.lastProgressTs = undefined;
    forgetProcess(s);
    s.streaks = { throughputZero: 0, lossSame: 0, gradZero: 0, gateCollapse: 0, nonfinite: 0 };
    s.fetchSamples = 0;
    s.fetchBaseline = undefined;
    s.dtFetchS = undefined;
    return s;
  }
  if (cls !== 'progress') return s;
  reduceProgress(s, r, p);
  return s;
}

function reduceProgress(s: RankState, r: HeartbeatRecord, p: ReduceParams): void {
  s.lastProgressTs = r.ts;
  const st = s.streaks;
  if (r.toks_per_s !== undefined) {
    s.toksPerS = r.toks_per_s;
    st.throughputZero = r.toks_per_s <= 0 ? st.throughputZero + 1 : 0;
    s.toksHistory.push(r.toks_per_s);
    if (s.toksHistory.length > TOKS_HISTORY) s.toksHistory.shift();
  }
  if (r.loss !== undefined) {
    const same = Number.isFinite(r.loss) && s.loss === r.loss;
    st.lossSame = same ? st.lossSame + 1 : Number.isFinite(r.loss) ? 1 : 0;
    s.loss = r.loss;
  }
  if (r.grad_norm !== undefined) {
    s.gradNorm = r.grad_norm;
    st.gradZero = r.grad_norm === 0 ? st.gradZero + 1 : 0;
  }
  if (r.loss !== undefined || r.grad_norm !== undefined) {
    const bad = (r.loss !== undefined && !Number.isFinite(r.loss)) || (r.grad_norm !== undefined && !Number.isFinite(r.grad_norm));
    st.nonfinite = bad ? st.nonfinite + 1 : 0;
  }
  const hasGate = r.gate_entropy_mean !== undefined || r.gate_max_gate !== undefined || r.gate_collapse_frac !== undefined;
  if (hasGate) {
    if (r.gate_entropy_mean !== undefined) s.gateEntropyMean = r.gate_entropy_mean;
    if (r.gate_entropy_min !== undefined) s.gateEntropyMin = r.gate_entropy_min;
    if (r.gate_max_gate !== undefined) s.gateMaxGate = r.gate_max_gate;
    if (r.gate_collapse_frac !== undefined) s.gateCollapseFrac = r.gate_collapse_frac;
    // The original watchdog's rule: any one of the three signals marks the record collapsed.
    const collapsed =
      (r.gate_entropy_mean !== undefined && r.gate_entropy_mean < p.gateEntropyMin) ||
      (r.gate_max_gate !== undefined && r.gate_max_gate > p.gateMaxThreshold) ||
      (r.gate_collapse_frac !== undefined && r.gate_collapse_frac > p.gateCollapseFrac);
    st.gateCollapse = collapsed ? st.gateCollapse + 1 : 0;
  }
  if (r.dt_fetch_s !== undefined && Number.isFinite(r.dt_fetch_s) && r.dt_fetch_s >= 0) {
    const dt = r.dt_fetch_s;
    s.dtFetchS = dt;
    if (s.fetchSamples < p.fetchWarmupN || s.fetchBaseline === undefined) {
      // Warm-up: the baseline is the plain mean of the first samples.
      s.fetchBaseline = s.fetchBaseline === undefined ? dt : (s.fetchBaseline * s.fetchSamples + dt) / (s.fetchSamples + 1);
      s.fetchSamples++;
    } else if (!(p.fetchStallRatio > 0 && dt > p.fetchStallRatio * s.fetchBaseline)) {
      // Spikes are kept out of the baseline, so a long stall cannot normalise itself.
      s.fetchBaseline += FETCH_EWMA_ALPHA * (dt - s.fetchBaseline);
      s.fetchSamples++;
    }
  }
}
