// The status page's JSON: every run and rank at a glance, built from current state. Runs come
// sorted by how urgently they need a human (see SEVERITY_ORDER), so the JSON, the
// server-rendered page and its refreshes all agree on the order.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CONTROL_FILES } from '../actions/files.js';
import { pidAlive } from '../actions/signals.js';
import { effectiveStallS, type Anomaly } from '../detect/detect.js';
import { ANOMALY_KINDS, kindOf } from '../detect/kinds.js';
import type { Run, Watcher } from '../watch/watcher.js';

/** The states a run can be in, as the status document names them. */
export const RUN_STATES = ['starting', 'training', 'anomalous', 'halt_requested', 'halted', 'finished', 'crashed', 'expired'] as const;
/** One run state. */
export type RunState = (typeof RUN_STATES)[number];

/** The run's most important anomaly. */
export interface Primary {
  kind: string;
  severity: 'critical' | 'warning' | 'info';
  rank: number;
  message: string;
}

/** Who wrote the .HALT that is there, and for what. */
export interface HaltInfo {
  kind?: string;
  by: 'trainwatch' | 'trainer' | 'unknown';
}

/** Whether trainwatch can see the trainer's process. */
export type Liveness = 'verified' | 'unknown' | 'exited';

/** One rank row of the status page. */
export interface RankStatus {
  rank: number;
  /** periodic: writes progress, beats or step_end; boot_only: silent by design after boot */
  role: 'periodic' | 'boot_only';
  age?: number;
  stallS: number;
  step?: number;
  toksPerS?: number;
  toksHistory: number[];
  loss?: number | string;
  streaks: Record<string, { value: number; threshold: number }>;
  anomalies: string[];
}

/** A run's lifecycle as the page shows it. */
export interface Lifecycle {
  state: RunState;
  /** one human sentence: why the run is in this state */
  reason: string;
  primary?: Primary;
  liveness: Liveness;
  attempt: number;
  halt?: HaltInfo;
}

/**
 * Page order, most urgent first: a critical anomaly outranks a halt still waiting for the
 * trainer, which outranks a warning; runs that need nobody (halted, finished, expired) come last.
 */
const SEVERITY_ORDER = ['anomalous:critical', 'halt_requested', 'anomalous', 'crashed', 'starting', 'training', 'halted', 'finished', 'expired'];

/** A run's place in SEVERITY_ORDER (lower is more urgent). */
export function severityRank(r: { state: RunState; primary?: Primary }): number {
  const key = r.state === 'anomalous' && r.primary?.severity === 'critical' ? 'anomalous:critical' : r.state;
  return SEVERITY_ORDER.indexOf(key);
}

/** Numbers JSON cannot hold (NaN, ±Infinity) travel as strings. */
function num(v: number | undefined): number | string | undefined {
  return v === undefined || Number.isFinite(v) ? v : String(v);
}

const SEVERITY_WEIGHT = { critical: 0, warning: 1, info: 2 } as const;

/** The anomaly to show first: critical before warning, halting kinds first, then list order. */
function primaryOf(anomalies: Anomaly[]): Primary | undefined {
  const key = (a: Anomaly) => {
    const k = kindOf(a.kind)!;
    return SEVERITY_WEIGHT[k.severity] * 100 + (k.halts ? 0 : 50) + ANOMALY_KINDS.findIndex((x) => x.name === a.kind);
  };
  const a = anomalies.slice().sort((x, y) => key(x) - key(y) || x.rank - y.rank)[0];
  return a && { kind: a.kind, severity: kindOf(a.kind)!.severity, rank: a.rank, message: a.message };
}

/** What .HALT says (`halt: <kind>`), and who is known to have written it. */
function haltOf(w: Watcher, run: Run): HaltInfo {
  let kind: string | undefined;
  try {
    kind = /^halt:\s*(\S+)/.exec(readFileSync(join(run.dir, CONTROL_FILES.halt), 'utf8').slice(0, 256))?.[1];
  } catch {
    // removed since the sweep saw it, or unreadable: the kind stays unknown
  }
  const ours = w.actions.recent(run.real).some((e) => e.event === 'action' && e.action === 'halt' && e.result === 'ok');
  // The trainer's own NaN abort writes `halt: nan_loss`; trainwatch never uses that name.
  return { kind, by: ours ? 'trainwatch' : kind === 'nan_loss' ? 'trainer' : 'unknown' };
}

/** Seconds as the page writes them. */
function fmtS(s: number): string {
  return s < 120 ? `${Math.round(s)} s` : s < 7200 ? `${(s / 60).toFixed(0)} min` : `${(s / 3600).toFixed(1)} h`;
}

/** A run's state, reason and liveness from what the watcher knows. */
function lifecycleOf(w: Watcher, run: Run, now: number): Lifecycle {
  const ranks = [...run.ranks.values()];
  const pids = [...new Set(ranks.map((s) => s.pid).filter((p): p is number => p !== undefined))];
  const alive = pids.filter((p) => run.alive.get(p) ?? pidAlive(p));
  const liveness: Liveness = pids.length === 0 ? 'unknown' : alive.length ? 'verified' : 'exited';
  const pidText = pids.length === 1 ? `pid ${pids[0]}` : `pids ${pids.join(', ')}`;
  const primary = primaryOf(run.anomalies);
  const base = { liveness, attempt: 1, primary };
  const newest = run.newestTs();
  if (run.expired) return { ...base, state: 'expired', reason: `no record for ${fmtS(now - (newest ?? now))} (run.ttl-s is ${w.config['run.ttl-s']} s); it no longer alerts` };
  if (run.halted) {
    const halt = haltOf(w, run);
    const what = `${halt.by === 'unknown' ? '.HALT' : `halted by ${halt.by}`}${halt.kind ? `: ${halt.kind}` : ''}`;
    if (liveness === 'verified') return { ...base, halt, state: 'halt_requested', reason: `${what}; the trainer (${pidText}) still runs` };
    return { ...base, halt, state: 'halted', reason: `${what}; ${liveness === 'exited' ? 'the trainer exited' : 'liveness unknown: the trainer is not visible from this host'}` };
  }
  if (primary) {
    const crashed = primary.kind === 'trainer_crash';
    return { ...base, state: crashed ? 'crashed' : 'anomalous', reason: `${primary.kind} on rank ${primary.rank}: ${primary.message}` };
  }
  if (liveness === 'exited') return { ...base, state: 'finished', reason: `the trainer (${pidText}) exited with no .HALT and no open anomaly` };
  const steps = ranks.map((s) => s.step).filter((s): s is number => s !== undefined);
  const progressed = ranks.some((s) => s.lastProgressTs !== undefined);
  const ago = (ts: number | undefined) => (ts === undefined ? 'never' : `${fmtS(Math.max(0, now - ts))} ago`);
  if (!progressed) return { ...base, state: 'starting', reason: `no progress yet, newest record ${ago(newest)} (startup grace ${w.thresholds.startupGraceS} s)` };
  const step = steps.length ? Math.max(...steps) : undefined;
  return { ...base, state: 'training', reason: `step ${step ?? '?'}, newest record ${ago(newest)}` };
}

/** The status page's data. */
export function statusJson(w: Watcher, now: number, version: string) {
  const t = w.thresholds;
  const runs = [];
  for (const run of w.runs.values()) {
    const ranks: RankStatus[] = [];
    for (const s of [...run.ranks.values()].sort((a, b) => a.rank - b.rank)) {
      const periodic = s.records.progress + s.records.beat + s.records.step_end > 0;
      ranks.push({
        rank: s.rank,
        role: periodic ? 'periodic' : 'boot_only',
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
      dir: run.dir,
      ...lifecycleOf(w, run, now),
      expired: run.expired,
      halted: run.halted,
      anomalies: [...new Set(run.anomalies.map((a) => a.kind))],
      episodes: w.actions.openEpisodes(run.real).map((e) => ({ kind: e.kind, source: e.source, since: e.ts, done: [...e.done.keys()] })),
      audit: w.actions.recent(run.real),
      ranks,
    });
  }
  runs.sort((a, b) => severityRank(a) - severityRank(b) || (a.run < b.run ? -1 : a.run > b.run ? 1 : 0));
  const states = Object.fromEntries(RUN_STATES.map((s) => [s, 0])) as Record<RunState, number>;
  for (const r of runs) states[r.state]++;
  return { version, now, mode: w.config.mode, halt: w.config.halt, thresholds: t, states, runs };
}

/** The status document served at api/status and embedded in the page. */
export type StatusDoc = ReturnType<typeof statusJson>;
