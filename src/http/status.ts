// The status page's JSON: every run and rank at a glance, built from current state. Runs come
// sorted by how urgently they need a human (see SEVERITY_ORDER), so the JSON, the
// server-rendered page and its refreshes all agree on the order.
import { effectiveStallS, primaryOf } from '../detect/detect.js';
import { kindOf } from '../detect/kinds.js';
import { RUN_STATES, type RunState } from '../state/lifecycle.js';
import { rankRole } from '../state/rank.js';
import type { Watcher } from '../watch/watcher.js';
import { watchedPaths } from './peer.js';

/** One rank row of the status page. */
export interface RankStatus {
  rank: number;
  age?: number;
  stallS: number;
  step?: number;
  toksPerS?: number;
  toksHistory: number[];
  loss?: number | string;
  streaks: Record<string, { value: number; threshold: number }>;
  anomalies: string[];
  /** periodic (its silence is judged) or boot_only (judged through the run) */
  role: string;
  /** when its silence becomes a stall, and which liveness rule set it */
  deadline?: { at: number; basis: string };
}

/**
 * Page order, most urgent first: a critical anomaly outranks a halt still waiting for the
 * trainer, which outranks a warning; runs that need nobody (halted, finished, expired) come last.
 */
const SEVERITY_ORDER = ['anomalous:critical', 'halt_requested', 'anomalous', 'crashed', 'starting', 'training', 'halted', 'finished', 'expired'];

/** A run's place in SEVERITY_ORDER (lower is more urgent). */
export function severityRank(r: { state: RunState; primary?: { severity: string } }): number {
  const key = r.state === 'anomalous' && r.primary?.severity === 'critical' ? 'anomalous:critical' : r.state;
  return SEVERITY_ORDER.indexOf(key);
}

/** Numbers JSON cannot hold (NaN, ±Infinity) travel as strings. */
function num(v: number | undefined): number | string | undefined {
  return v === undefined || Number.isFinite(v) ? v : String(v);
}

/** The status page's data. */
export function statusJson(w: Watcher, now: number, version: string) {
  const runs = [];
  const states = Object.fromEntries(RUN_STATES.map((st) => [st, 0])) as Record<RunState, number>;
  for (const run of w.runs.values()) {
    const t = run.profile.thresholds;
    const ranks: RankStatus[] = [];
    // A rank whose file was deleted is not shown (its counters stay in /metrics until the run expires).
    for (const s of [...run.ranks.values()].filter((x) => !run.goneRanks.has(x.rank)).sort((a, b) => a.rank - b.rank)) {
      ranks.push({
        rank: s.rank,
        age: s.lastLivenessTs === undefined ? undefined : Math.max(0, now - s.lastLivenessTs),
        stallS: effectiveStallS(s, t),
        step: s.step,
        toksPerS: s.toksPerS,
        toksHistory: s.toksHistory.filter(Number.isFinite),
        loss: num(s.loss),
        streaks: {
          throughput_flatline: { value: s.streaks.throughputZero, threshold: t.flatlineN },
          loss_flatline: { value: s.streaks.lossSame, threshold: t.lossFlatlineN },
          zero_grad: { value: s.streaks.gradZero, threshold: t.gradZeroN },
          gate_collapse: { value: s.streaks.gateCollapse, threshold: t.gateCollapseN },
          nonfinite_loss: { value: s.streaks.nonfinite, threshold: t.nonfiniteN },
        },
        anomalies: run.anomalies.filter((a) => a.rank === s.rank).map((a) => a.kind),
        role: rankRole(s),
        deadline: run.deadlines.has(s.rank) ? { at: run.deadlines.get(s.rank)!.at, basis: run.deadlines.get(s.rank)!.basis } : undefined,
      });
    }
    states[run.life.state]++;
    // A stall is not reported while .HALT is there (silence is expected): the open episode that
    // halted the run still names what went wrong.
    const open = w.actions.openEpisodes(run.real);
    const held = primaryOf(open);
    const p =
      run.primary ?? (held && { kind: held.kind, rank: held.rank ?? 0, message: `${held.kind} (open since ${new Date(held.ts * 1000).toISOString()})` });
    runs.push({
      run: run.name,
      dir: run.dir,
      state: run.life.state,
      reason: run.life.reason,
      primary: p && { kind: p.kind, severity: kindOf(p.kind)?.severity ?? 'warning', rank: p.rank, message: p.message },
      liveness: run.liveness,
      attempt: run.attempt,
      // Which thresholds judge it (config/profiles.ts), and whether a halting anomaly writes .HALT.
      profile: { name: run.profile.name, via: run.profile.via, halt: run.profile.halt },
      halt: run.halt.present ? { kind: run.halt.kind, by: run.halt.by ?? 'unknown' } : undefined,
      expired: run.expired,
      halted: run.halted,
      anomalies: [...new Set(run.anomalies.map((a) => a.kind))],
      episodes: w.actions.openEpisodes(run.real).map((e) => ({ kind: e.kind, source: e.source, since: e.ts, done: [...e.done.keys()] })),
      audit: w.actions.recent(run.real),
      ranks,
    });
  }
  runs.sort((a, b) => severityRank(a) - severityRank(b) || (a.run < b.run ? -1 : a.run > b.run ? 1 : 0));
  const profiles = Object.fromEntries([...w.runs.values()].map((r) => [r.profile.name, { ...r.profile.thresholds, halt: r.profile.halt }]));
  return { version, now, mode: w.config.mode, halt: w.config.halt, watch: watchedPaths(w.config), thresholds: w.thresholds, profiles, states, runs };
}

/** The status document served at api/status and embedded in the page. */
export type StatusDoc = ReturnType<typeof statusJson>;
