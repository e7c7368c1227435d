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

/** A rank's step at trainer time `ts` from its recent history; undefined if `ts` is older than it. */
function stepAt(s: RankState, ts: number): number | undefined {
  const h = s.stepHistory;
  for (let i = h.length - 2; i >= 0; i -= 2) if (h[i]! <= ts) return h[i + 1];
  return undefined;
}

/**
 * How many steps each rank is behind the most advanced peer, compared at the same moment: the
 * rank's newest record time. Comparing the newest steps instead would flag whichever rank's file
 * happened to be read last, and a hung rank (a stall, not a straggler) would look far behind.
 */
export function stepLags(ranks: readonly RankState[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const s of ranks) {
    if (s.step === undefined || s.lastLivenessTs === undefined) continue;
    let lead = s.step;
    for (const p of ranks) {
      if (p === s) continue;
      const ps = stepAt(p, s.lastLivenessTs);
      if (ps !== undefined && ps > lead) lead = ps;
    }
    out.set(s.rank, lead - s.step);
  }
  return out;
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
