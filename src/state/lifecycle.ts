// The run lifecycle: what state a run is in, from facts the shell observed. Pure: no clock
// (`now` is an argument), no I/O. Detection, actions, metrics, the rules, the webhook and the
// status page all read the state from here, so they cannot disagree.
//
//   starting ──first periodic record──▶ training ──anomaly──▶ anomalous
//      ▲                                   │  ▲                   │
//      │ new attempt (new pid / boot)      │  └──resolved─────────┤
//      │                                   │                      ▼ .HALT written (by anyone)
//      │                                   │               halt_requested ──trainer gone──▶ halted
//      │                                   └──trainer gone, no .HALT──▶ finished (crashed: opt-in)
//   any state ──no record for run.ttl-s──▶ expired
//
// The trainer writes no final record, so a finished run and a hung one look the same in the
// files: only the process tells them apart. Where trainwatch can see the trainer's pid (same
// host and pid namespace, and the process started when its records say it did), a pid that is
// gone ends the run. Where it cannot, liveness is `unknown` and silence is judged as before.
import type { RankState } from './rank.js';

/** Every state a run can be in, in the order the docs list them. */
export const RUN_STATES = ['starting', 'training', 'anomalous', 'halt_requested', 'halted', 'finished', 'crashed', 'expired'] as const;
/** A run's lifecycle state. */
export type RunState = (typeof RUN_STATES)[number];

/** States in which a run's trainer is over: no stall, no .HALT, and the rules are silent. */
export const OVER_STATES: ReadonlySet<RunState> = new Set(['halted', 'finished', 'expired']);

/** What the shell saw of one pid: alive and verified as the trainer, gone, or not visible. */
export type ProcFact = 'alive' | 'gone' | 'unknown';

/**
 * Whether the trainer runs: `verified` (a pid of the run is alive and is the trainer), `exited`
 * (every visible pid is gone, or the trainer wrote an end record), `unknown` (no pid visible:
 * another host or pid namespace; finish and hang then look alike).
 */
export type Liveness = 'verified' | 'unknown' | 'exited';

/** Who wrote the .HALT that is there: trainwatch (its audit log says so), the trainer (`halt: nan_loss`), or unknown. */
export type HaltBy = 'trainwatch' | 'trainer' | 'unknown';

/** The .HALT file as the shell saw it. */
export interface HaltFact {
  present: boolean;
  /** the kind named by its `halt: <kind>` line, if any */
  kind?: string;
  by?: HaltBy;
  /** when it appeared (its mtime, seconds) */
  since?: number;
}

/** Kinds the trainer itself writes into .HALT (it aborts on a non-finite loss by itself). */
const TRAINER_HALT_KINDS: ReadonlySet<string> = new Set(['nan_loss']);

/** Parses .HALT's content (`halt: <kind>`); an empty or foreign file names no kind. */
export function parseHaltLine(text: string): string | undefined {
  const m = /^halt:\s*([A-Za-z0-9_.-]{1,64})\s*$/m.exec(text);
  return m?.[1];
}

/** Who wrote a .HALT naming `kind`, given whether trainwatch's audit log records writing it. */
export function haltAuthor(kind: string | undefined, oursByAudit: boolean): HaltBy {
  if (oursByAudit) return 'trainwatch';
  if (kind !== undefined && TRAINER_HALT_KINDS.has(kind)) return 'trainer';
  return 'unknown';
}

/** The run's liveness from its ranks' pids, end records, and what the shell saw of each pid. */
export function livenessOf(ranks: readonly RankState[], procs: ReadonlyMap<number, ProcFact>): Liveness {
  let alive = false;
  let gone = false;
  for (const s of ranks) {
    if (s.endTs !== undefined) return 'exited'; // the trainer said so
    if (s.pid === undefined) continue;
    const f = procs.get(s.pid) ?? 'unknown';
    if (f === 'alive') alive = true;
    else if (f === 'gone') gone = true;
  }
  // One visible rank alive keeps the run alive; with ranks on other hosts, the visible ones
  // having exited is taken as the job having ended (DDP ranks end together).
  return alive ? 'verified' : gone ? 'exited' : 'unknown';
}

/**
 * Which attempt the records belong to: the pid of the lowest rank (a resume or restart starts
 * new processes), or its boot time where records carry no pid. Stable across trainwatch
 * restarts because it comes from the records, not from when trainwatch read them.
 */
export function attemptKeyOf(ranks: Iterable<RankState>): string | undefined {
  let low: RankState | undefined;
  for (const s of ranks) if ((s.pid !== undefined || s.bootTs !== undefined) && (low === undefined || s.rank < low.rank)) low = s;
  if (!low) return undefined;
  return `${low.rank}/${low.pid !== undefined ? `pid:${low.pid}` : `boot:${low.bootTs}`}`;
}

/**
 * Whether moving from attempt key `was` to `now` is a new attempt: the same rank has a new
 * process. A key that moves to another rank only means a lower rank's file was read later.
 */
export function isNewAttempt(was: string | undefined, now: string): boolean {
  return was !== undefined && was !== now && was.split('/')[0] === now.split('/')[0];
}

/** Whether any rank of the run has written a periodic record since its boot: the run trains. */
export function runTrains(ranks: readonly RankState[]): boolean {
  return ranks.some((s) => s.lastPeriodicTs !== undefined);
}

/** The trainer ts of the newest record of any kind in the run. */
export function newestRecordTs(ranks: Iterable<RankState>): number | undefined {
  let t: number | undefined;
  for (const s of ranks) for (const v of [s.lastLivenessTs, s.lastDumpTs]) if (v !== undefined && (t === undefined || v > t)) t = v;
  return t;
}

/** The primary anomaly, as lifecycle needs it. */
export interface PrimaryFact {
  kind: string;
  rank: number;
  severity: string;
}

/** Everything that decides a run's state. */
export interface LifeFacts {
  ranks: readonly RankState[];
  liveness: Liveness;
  halt: HaltFact;
  /** the most important anomaly active now (after acknowledgement), if any */
  primary?: PrimaryFact;
  /** no record for longer than run.ttl-s */
  expired: boolean;
  /** crash detection is on: a trainer gone without .HALT or end record is crashed, not finished */
  crashDetect: boolean;
  /** the stall threshold in force, for judging a halt whose trainer cannot be seen */
  stallS: number;
  /** the newest acknowledgement: with nothing written since, the run waits for a new trainer */
  ackTs?: number;
}

/** A run's state and one sentence saying why. */
export interface StateOf {
  state: RunState;
  reason: string;
}

/** The state of a run at `now` (seconds, the trainer's clock on this host). */
export function runStateOf(f: LifeFacts, now: number): StateOf {
  const rankNote = f.primary ? ` on rank ${f.primary.rank}` : '';
  if (f.expired) return { state: 'expired', reason: 'no record for longer than run.ttl-s' };
  if (f.halt.present) {
    const why = `${f.halt.by === 'trainwatch' ? 'halted by trainwatch' : f.halt.by === 'trainer' ? 'halted by the trainer itself' : '.HALT present'}${f.halt.kind ? `: ${f.halt.kind}` : ''}`;
    if (f.liveness === 'exited') return { state: 'halted', reason: `${why}; the trainer exited` };
    if (f.liveness === 'unknown') {
      // Without a visible process: the trainer stopped if nothing was written for a stall
      // threshold since .HALT appeared.
      const newest = newestRecordTs(f.ranks);
      const since = f.halt.since ?? now;
      if (now - since > f.stallS && (newest === undefined || newest <= since))
        return { state: 'halted', reason: `${why}; nothing written since (liveness unknown)` };
      return { state: 'halt_requested', reason: `${why}; waiting for the trainer to stop (liveness unknown)` };
    }
    return { state: 'halt_requested', reason: `${why}; the trainer still runs` };
  }
  const newest = newestRecordTs(f.ranks);
  if (f.ackTs !== undefined && (newest === undefined || newest <= f.ackTs) && f.liveness !== 'verified') {
    return { state: 'halted', reason: 'cleared for a resume; waiting for a new trainer' };
  }
  if (f.liveness === 'exited') {
    const ended = f.ranks.some((s) => s.endTs !== undefined);
    if (!ended && f.crashDetect) return { state: 'crashed', reason: 'the trainer exited without .HALT or an end record' };
    const last = f.primary ? `; last anomaly: ${f.primary.kind}${rankNote}` : '';
    return { state: 'finished', reason: `${ended ? 'the trainer wrote its end record' : 'the trainer exited with no .HALT'}${last}` };
  }
  const unknown = f.liveness === 'unknown' ? ' (liveness unknown: finish and hang look alike)' : '';
  if (f.primary) return { state: 'anomalous', reason: `${f.primary.kind}${rankNote}${unknown}` };
  if (runTrains(f.ranks))
    return {
      state: 'training',
      reason: `progress from rank ${
        f.ranks
          .filter((s) => s.lastPeriodicTs !== undefined)
          .map((s) => s.rank)
          .sort((a, b) => a - b)[0]
      }${unknown}`,
    };
  return { state: 'starting', reason: `booted, no progress yet (startup grace)${unknown}` };
}
