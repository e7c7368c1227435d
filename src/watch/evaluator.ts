// Evaluation: when a run is judged, and what is done with the verdict. Each evaluation reads
// the control files' state and the trainer's processes, runs the pure detector and lifecycle,
// acts through the actions module, and arms one timer for the run's next stall deadline.
// Records mark a run dirty; a burst of them is one evaluation after the read completes.
import { closeSync, constants as fsc, fstatSync, lstatSync, openSync, readSync, statSync, type Stats } from 'node:fs';
import { lstat, open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Actions, TrainerProc } from '../actions/actions.js';
import { CONTROL_FILES } from '../actions/files.js';
import { procFact, provenWriter, type WriterFacts } from '../actions/signals.js';
import type { Config } from '../config/settings.js';
import { detectRun, nextStallDeadline, primaryOf, stallDeadlines, type RunFacts, type StallDeadline } from '../detect/detect.js';
import { kindOf } from '../detect/kinds.js';
import type { Logger } from '../log.js';
import type { Profiles } from '../config/profiles.js';
import { attemptKeyOf, haltAuthor, isNewAttempt, livenessOf, newestRecordTs, parseHaltLine, runStateOf, type HaltFact } from '../state/lifecycle.js';
import type { Clock } from './clock.js';
import type { Run } from './run.js';

/** A run with no record for this long has its trainers' processes looked at on each evaluation. */
export const QUIET_S = 1;
/**
 * The longest timer set: a deadline further ahead (a clock far off, `ts` in milliseconds) is
 * re-armed from there. setTimeout takes at most 2^31-1 ms and fires at once (every 1 ms, for
 * ever) past that.
 */
export const MAX_TIMER_MS = 3_600_000;

/** What the evaluator needs from the watcher around it. */
export interface EvaluatorHost {
  readonly runs: ReadonlyMap<string, Run>;
  /** false while the files that existed at startup are still being read back */
  isReady(): boolean;
  isStopped(): boolean;
  /** the run's directory changed under it: discover again */
  rediscover(run: Run): void;
  /** reads whatever its files hold that was not read yet */
  catchUp?(run: Run): Promise<void>;
  /** the threshold profiles (config/profiles.ts): a run directory's .trainwatch-profile chooses among them */
  readonly profiles?: Profiles;
}

/** Judges runs and acts on the verdicts; see the header. */
export class Evaluator {
  private readonly dirtyRuns = new Set<Run>();
  private evalScheduled = false;
  /** trainer pids seen alive on this host (watch.pid-check auto: only those can be seen gone) */
  readonly seenAlive = new Set<number>();
  private procUnreadableLogged = false;

  constructor(
    private readonly config: Config,
    private readonly actions: Actions,
    private readonly log: Logger,
    private readonly clock: Clock,
    private readonly host: EvaluatorHost,
    /** how a trainer pid is looked at (tests inject one) */
    private readonly procFactOf: typeof procFact = procFact,
  ) {}

  markDirty(run: Run): void {
    // While the files that existed at startup are still being read back, the state is partial
    // (one rank read, its peer not yet; a streak re-read in a larger window): judging it then
    // raises false stalls and stragglers. The end of the first sweep evaluates every run.
    if (!this.host.isReady()) return;
    this.dirtyRuns.add(run);
    if (this.evalScheduled) return;
    this.evalScheduled = true;
    // Coalesce a burst of lines into one evaluation, after the current read completes.
    setImmediate(() => {
      this.evalScheduled = false;
      const runs = [...this.dirtyRuns];
      this.dirtyRuns.clear();
      for (const r of runs) void this.evaluate(r);
    });
  }

  /** Re-evaluates every run (the NSA_WATCH_INTERVAL_S safety sweep, and after each stat sweep). */
  async evaluateAll(): Promise<void> {
    await Promise.all([...this.host.runs.values()].map((r) => this.evaluate(r)));
  }

  /**
   * Runs detection on one run, works out its lifecycle state, acts on it, and arms its stall
   * timer. The order matters: acknowledgements first (an operator's removal of .HALT must be
   * known before old evidence is judged), then the processes, then detection.
   */
  async evaluate(run: Run, caughtUp = false): Promise<void> {
    if (this.host.isStopped()) return;
    if (caughtUp) run.stalled = true; // read to the end just now: judge what is there
    run.dirty = false;
    const now = this.clock.now();
    // A rank whose file was deleted is judged again only once it writes again.
    const ranks = [...run.ranks.values()].filter((s) => {
      const gone = run.goneRanks.get(s.rank);
      if (gone === undefined) return true;
      if ((s.lastLivenessTs ?? -Infinity) <= gone) return false;
      run.goneRanks.delete(s.rank);
      return true;
    });
    const newest = newestRecordTs(ranks);
    run.expired = newest !== undefined && now - newest > this.config['run.ttl-s'];
    const key = attemptKeyOf(ranks);
    if (key !== undefined && key !== run.attemptKey) {
      const fresh = isNewAttempt(run.attemptKey, key);
      if (fresh) this.log.info({ run: run.name, attempt: run.attempt + 1 }, 'new trainer attempt: a new process on the same rank');
      if (fresh || run.attempt === 0) run.attempt++;
      if (fresh && run.csv) run.csv.throughputZero = 0; // the old attempt's rows are no evidence against the new one
      run.attemptKey = key;
    }
    // A run directory deleted under us makes the acknowledgement's audit append fail: judged at the next sweep.
    await this.checkAcks(run, now).catch((e: unknown) => this.log.debug({ run: run.name, err: (e as Error).message }, 'acknowledgement not recorded'));
    // An active run's pids were looked at when they first wrote; a quiet one's every time.
    this.refreshProcs(run, newest === undefined || now - newest > QUIET_S);
    run.liveness = livenessOf(ranks, run.procs);
    const facts: RunFacts = {
      ranks,
      csv: run.csv,
      halted: run.halt.present,
      pidAlive: (pid: number) => (run.procs.get(pid) === 'alive' ? true : run.procs.get(pid) === 'gone' ? false : undefined),
      liveness: run.liveness,
      ackTs: run.ackTs,
      csvTs: run.ranks.get(0)?.lastProgressTs ?? newest,
    };
    run.anomalies = run.expired ? [] : detectRun(facts, run.profile.thresholds, now);
    if (this.host.catchUp && run.anomalies.some((a) => a.kind === 'heartbeat_stall' && a.evidenceTs === undefined) && !run.stalled) {
      // Silence is judged only on what the files hold: a busy file read behind (a restart's
      // backlog, a slow poll) is read first, and the verdict taken again.
      await this.host.catchUp(run);
      return this.evaluate(run, true);
    }
    run.stalled = run.anomalies.some((a) => a.kind === 'heartbeat_stall');
    run.deadlines = run.expired ? new Map<number, StallDeadline>() : stallDeadlines(facts, run.profile.thresholds);
    run.primary = primaryOf(run.anomalies);
    this.judge(run, now);
    this.clock.clearTimeout(run.timer);
    run.timer = undefined;
    if (!run.expired) {
      const deadline = nextStallDeadline(facts, run.profile.thresholds, now);
      if (deadline !== undefined) {
        // Fire just after the deadline: the rule is "older than", not "as old as".
        run.timer = this.clock.setTimeout(() => void this.evaluate(run), Math.min(MAX_TIMER_MS, Math.max(0, (deadline - now) * 1000) + 20));
      }
    }
    // Only escalation and the auto-clear (after a .HALT) need the processes verified.
    const procs: TrainerProc[] = [];
    for (const s of run.halted ? ranks : []) {
      if (s.pid === undefined) continue;
      // The rank's own file, or the older single heartbeat.jsonl; its owner must be the process's uid.
      const file = run.tails.get(`heartbeat_rank${s.rank}.jsonl`) ?? run.tails.get('heartbeat.jsonl');
      const writer = { pid: s.pid, sinceTs: s.pidSinceTs, bootTs: s.pidBootTs };
      const verify = () => this.proven(run, writer, file?.ownerUid);
      procs.push({ pid: s.pid, lastLivenessTs: s.lastLivenessTs, verify, fact: run.procs.get(s.pid) ?? 'unknown' });
    }
    if (run.anomalies.length > 0 && !this.sameInstance(run)) return; // re-created under us: the next discovery starts it afresh
    const escalating = this.config['watch.escalate-s'] > 0 || this.config['watch.auto-clear-halt'];
    try {
      if (this.acting) await this.actions.reconcile(run, run.anomalies, now, procs);
      else if (run.halted && escalating) await this.actions.escalateOnly(run, now, procs);
    } catch {
      // Already logged and counted with its fix; the next evaluation retries.
    }
    if (run.halted && this.config['watch.auto-clear-halt']) {
      // The auto-clear may have removed our .HALT (and recorded the acknowledgement itself).
      await this.observeControl(run);
      if (!run.halt.present) {
        run.lastControl = { halt: false, anomalyType: run.anomalyType };
        run.ackTs = await this.actions.ackTs(run);
        this.markDirty(run);
      }
    } else if (this.acting && run.primary && !run.halt.present) {
      // We may just have written .HALT: the state says so now, not at the file event.
      await this.observeControl(run);
      if (run.halt.present) {
        run.lastControl = { halt: true, anomalyType: run.anomalyType };
        this.judge(run, now);
      }
    }
  }

  /** Escalation's proof of a rank's writer (signals.ts provenWriter); a /proc that hides the process's files is logged once. */
  private proven(run: Run, w: WriterFacts, fileUid: number | undefined): boolean {
    const proof = provenWriter(w, fileUid, run.real);
    if (proof === 'proc_unreadable' && !this.procUnreadableLogged) {
      this.procUnreadableLogged = true;
      this.log.warn(
        { run: run.name, pid: w.pid },
        `escalation cannot see the working directory or open files of pid ${w.pid} (/proc/${w.pid}/cwd and /proc/${w.pid}/fd refused), so it cannot prove that process is the run's writer and does not signal it (audited unverified; logged once). Fix: run trainwatch as the trainers' user, or give it CAP_SYS_PTRACE and CAP_KILL`,
      );
    }
    return proof === 'proven';
  }

  /** The run's lifecycle state from what the evaluation found. */
  private judge(run: Run, now: number): void {
    const p = run.primary;
    run.life = runStateOf(
      {
        ranks: [...run.ranks.values()].filter((s) => !run.goneRanks.has(s.rank)),
        liveness: run.liveness,
        halt: run.halt,
        primary: p && { kind: p.kind, rank: p.rank, severity: kindOf(p.kind)?.severity ?? 'warning' },
        expired: run.expired,
        crashDetect: run.profile.thresholds.crashDetect,
        stallS: run.profile.thresholds.stallS,
        ackTs: run.ackTs,
      },
      now,
    );
  }

  /** Whether the embedded detector writes control files (mode embedded). */
  private get acting(): boolean {
    return this.config.mode === 'embedded';
  }

  /**
   * Operators acknowledge by removing .HALT or .anomaly_type (docs/runbook.md). A removal seen
   * since the last evaluation, or, on the first evaluation after a start, a file the audit log
   * says trainwatch wrote for this attempt that is no longer there, is recorded as one.
   */
  private async checkAcks(run: Run, now: number): Promise<void> {
    const cur = { halt: run.halt.present, anomalyType: run.anomalyType };
    const prev = run.lastControl ?? (await this.actions.expected(run));
    const first = run.lastControl === undefined;
    run.lastControl = cur;
    if (prev.halt && !cur.halt) await this.actions.acknowledge(run, now, 'halt_removed');
    else if (prev.anomalyType && !cur.anomalyType) await this.actions.acknowledge(run, now, 'anomaly_type_removed');
    else if (!first) return;
    run.ackTs = await this.actions.ackTs(run);
  }

  /** Whether the run's directory is still the instance this run was created for. */
  private sameInstance(run: Run): boolean {
    try {
      if (statSync(run.dir).ino === run.instanceIno) return true;
    } catch {
      // gone
    }
    this.host.rediscover(run);
    return false;
  }

  /**
   * Looks at .HALT (is it there, what it says, since when) and .anomaly_type. Opened with
   * O_NONBLOCK and O_NOFOLLOW: a FIFO or symlink planted there must not block or redirect us.
   */
  async observeControl(run: Run): Promise<void> {
    // Direct system calls on a local disk (as the tails use); through the thread pool with
    // --poll (NFS, Lustre), where a stat can hang.
    const io = this.config.poll ? ASYNC_CONTROL_IO : SYNC_CONTROL_IO;
    const halt: HaltFact = { present: false };
    const path = join(run.dir, CONTROL_FILES.halt);
    const st = await io.stat(path); // follows a symlink, as the trainer's exists() does
    if (st) {
      halt.present = true;
      halt.since = st.mtimeMs / 1000;
      if (st.isFile() && st.size <= 4096) halt.kind = parseHaltLine(await io.readSmall(path).catch(() => ''));
    }
    halt.by = haltAuthor(halt.kind, halt.present && this.actions.haltKind(run.real) === halt.kind && halt.kind !== undefined);
    run.halt = halt;
    run.halted = halt.present;
    run.anomalyType = await io.lexists(join(run.dir, CONTROL_FILES.anomalyType));
    if (this.host.profiles?.fileChoice) await this.observeProfile(run, io);
  }

  /**
   * run.profile-file: the profile the run directory names in .trainwatch-profile, read like the
   * control files (O_NONBLOCK, O_NOFOLLOW, 4 KiB). Only a defined profile's name is taken; the
   * file cannot carry values, let alone anything that runs. Without the file, the globs decide.
   */
  private async observeProfile(run: Run, io: ControlIo): Promise<void> {
    const profiles = this.host.profiles!;
    const text = await io.readSmall(join(run.dir, CONTROL_FILES.profile)).catch(() => undefined);
    const named = text === undefined ? undefined : text.split('\n')[0].trim() || undefined;
    if (named === run.profileNamed) return;
    run.profileNamed = named;
    // Logged once per change of the file: this runs only when the name differs from the last.
    if (named !== undefined && !(named in profiles.defined))
      this.log.warn(
        { run: run.name, named, known: Object.keys(profiles.defined) },
        `${CONTROL_FILES.profile} names a profile that is not defined: the run keeps its profile from run.profile. Fix: name one of the known profiles, or define it under 'profiles:' in the config file`,
      );
    const next = profiles.forRun(run.name, named);
    if (next === run.profile) return;
    this.log.info({ run: run.name, profile: next.name, was: run.profile.name, via: next.via }, 'run profile changed: judged by its thresholds from now on');
    run.profile = next;
  }

  /**
   * Looks at the trainer processes of a run (watch.pid-check): every pid when `all` (a quiet
   * run), otherwise only pids not looked at yet. Returns whether any fact changed. An expired
   * run's processes are not looked at: its state is `expired` whatever they do, and a shared
   * root holds mostly such runs (at 200,000 files, reading /proc/<pid>/stat for each of their
   * pids at every sweep took most of a core: docs/benchmarks.md).
   */
  refreshProcs(run: Run, all: boolean): boolean {
    if (run.expired) return false;
    const mode = this.config['watch.pid-check'];
    let changed = false;
    const pids = new Set<number>();
    for (const s of run.ranks.values()) {
      if (s.pid === undefined) continue;
      pids.add(s.pid);
      if (!all && run.procs.has(s.pid)) continue;
      const f = this.procFactOf({ pid: s.pid, sinceTs: s.pidSinceTs, bootTs: s.pidBootTs }, mode, this.seenAlive);
      if (run.procs.get(s.pid) !== f) changed = true;
      run.procs.set(s.pid, f);
    }
    for (const pid of run.procs.keys()) if (!pids.has(pid)) run.procs.delete(pid);
    return changed;
  }
}

/** How the control files are looked at: stat (undefined when absent or unreadable), a small read, and lstat. */
interface ControlIo {
  stat(p: string): Promise<Stats | undefined>;
  readSmall(p: string): Promise<string>;
  lexists(p: string): Promise<boolean>;
}

// Every open is O_NONBLOCK and O_NOFOLLOW: a FIFO or symlink planted there must not block or redirect us.
const RD = fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK;

const SYNC_CONTROL_IO: ControlIo = {
  stat: async (p) => {
    try {
      return statSync(p, { throwIfNoEntry: false });
    } catch {
      return undefined; // unreadable (EACCES, a symlink loop): not there for the trainer either
    }
  },
  readSmall: async (p) => {
    const fd = openSync(p, RD);
    try {
      if (!fstatSync(fd).isFile()) return '';
      const buf = Buffer.alloc(4096);
      return buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)).toString('utf8');
    } finally {
      closeSync(fd);
    }
  },
  lexists: async (p) => {
    try {
      return lstatSync(p, { throwIfNoEntry: false }) !== undefined;
    } catch {
      return false;
    }
  },
};

const ASYNC_CONTROL_IO: ControlIo = {
  stat: (p) => stat(p).catch(() => undefined),
  readSmall: async (p) => {
    const fh = await open(p, RD);
    try {
      if (!(await fh.stat()).isFile()) return '';
      const buf = Buffer.alloc(4096);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      return buf.subarray(0, bytesRead).toString('utf8');
    } finally {
      await fh.close().catch(() => undefined);
    }
  },
  lexists: (p) =>
    lstat(p).then(
      () => true,
      () => false,
    ),
};
