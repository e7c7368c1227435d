// The status page's JSON: every run and rank at a glance, built from current state.
import { effectiveStallS } from '../detect/detect.js';
import type { Watcher } from '../watch/watcher.js';

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
}

/** Numbers JSON cannot hold (NaN, ±Infinity) travel as strings. */
function num(v: number | undefined): number | string | undefined {
  return v === undefined || Number.isFinite(v) ? v : String(v);
}

/** The status page's data. */
export function statusJson(w: Watcher, now: number, version: string) {
  const t = w.thresholds;
  const runs = [];
  for (const run of w.runs.values()) {
    const ranks: RankStatus[] = [];
    for (const s of [...run.ranks.values()].sort((a, b) => a.rank - b.rank)) {
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
      });
    }
    runs.push({
      run: run.name,
      expired: run.expired,
      halted: run.halted,
      anomalies: [...new Set(run.anomalies.map((a) => a.kind))],
      episodes: w.actions.openEpisodes(run.real).map((e) => ({ kind: e.kind, source: e.source, since: e.ts, done: [...e.done.keys()] })),
      audit: w.actions.recent(run.real),
      ranks,
    });
  }
  runs.sort((a, b) => a.run.localeCompare(b.run));
  return { version, now, mode: w.config.mode, halt: w.config.halt, thresholds: t, runs };
}
