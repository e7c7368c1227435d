// A watched run as plain domain data: its files, its ranks, and what the last evaluation made of
// them. The watcher's parts fill it in; metrics/ and http/ only read it.
import type { FSWatcher as DirWatcher } from 'node:fs';
import type { RunRef } from '../actions/actions.js';
import { defaultRunProfile, type RunProfile } from '../config/profiles.js';
import type { Anomaly, StallDeadline } from '../detect/detect.js';
import type { FileTail } from '../source/tail.js';
import { newestRecordTs, type HaltFact, type Liveness, type ProcFact, type StateOf } from '../state/lifecycle.js';
import type { RankState, ReduceParams } from '../state/rank.js';
import type { CsvState } from '../state/run.js';
import type { Timer } from './clock.js';
import type { RankTable } from './sinks.js';

/** One watched run: its files, its ranks and what detection sees now. */
export class Run implements RankTable, RunRef {
  ranks = new Map<number, RankState>();
  csv?: CsvState;
  tails = new Map<string, FileTail>();
  /** each tail's sink, to forget a deleted rank file's ranks */
  sinks = new Map<string, { reset(): void; ranksRead?(): number[] }>();
  /** ranks whose file was deleted (not rotated), with their newest record then: not judged until they write again */
  goneRanks = new Map<number, number>();
  /** .HALT exists (see `halt` for what it says) */
  halted = false;
  halt: HaltFact = { present: false };
  /** .anomaly_type exists */
  anomalyType = false;
  /** the control files as the last evaluation saw them; undefined before the first */
  lastControl: { halt: boolean; anomalyType: boolean } | undefined;
  /** the newest acknowledgement (state/lifecycle.ts) */
  ackTs: number | undefined;
  /** the trainer attempt the records belong to, and how many this trainwatch has seen */
  attemptKey: string | undefined;
  attempt = 0;
  /** what the shell sees of each trainer pid */
  procs = new Map<number, ProcFact>();
  liveness: Liveness = 'unknown';
  life: StateOf = { state: 'starting', reason: 'not evaluated yet' };
  primary: Anomaly | undefined;
  /** the last evaluation found a stall (its files were read to the end before it was believed) */
  stalled = false;
  /** each rank's stall deadline, as detection judged it last */
  deadlines = new Map<number, StallDeadline>();
  /** the directory inode this run instance lives in; a re-created directory is a new instance */
  instanceIno = -1;
  expired = false;
  anomalies: Anomaly[] = [];
  dirty = false;
  /** the stall timer (see Evaluator) */
  timer: Timer | undefined;
  /** the inotify watch on the directory, and the directory inode it is on */
  dirWatch: DirWatcher | undefined;
  dirIno = -1;
  /** the directory inode the latest discovery saw */
  seenIno = -1;
  /** records applied so far: a polled run that gets none is quiet */
  records = 0;
  /** busy detection: 'change' events in the current window, and when that window began (ms) */
  windowEvents = 0;
  windowStart = 0;
  /** while polled instead of watched: the directory as stat()ed when polling began, and polls that read nothing */
  polledDir: { ino: number; mtimeMs: number; ctimeMs: number } | undefined;
  quietPolls = 0;
  /** the sweep number that last visited this run (-1: never) */
  sweptAt = -1;

  /** the profile named in the run directory's .trainwatch-profile (run.profile-file), as last read */
  profileNamed: string | undefined;

  constructor(
    public name: string,
    readonly dir: string,
    readonly real: string,
    private readonly onTouched: (run: Run) => void,
    /** the thresholds it is judged by (config/profiles.ts); the watcher re-resolves it when its name or profile file changes */
    public profile: RunProfile = defaultRunProfile(),
  ) {}

  /** How single records are classified (RankTable): this run's gate and fetch thresholds. */
  get params(): ReduceParams {
    return this.profile.thresholds;
  }

  /** Whether a halting anomaly writes .HALT in this run (RunRef): its profile's halt. */
  get haltAllowed(): boolean {
    return this.profile.halt;
  }

  touched(): void {
    this.records++;
    if (this.dirty) return;
    this.dirty = true;
    this.onTouched(this);
  }

  /** The trainer ts of the newest record of any rank. */
  newestTs(): number | undefined {
    return newestRecordTs(this.ranks.values());
  }

  /** The trainer is known to have exited (RunRef). */
  get exited(): boolean {
    return this.liveness === 'exited';
  }
}
