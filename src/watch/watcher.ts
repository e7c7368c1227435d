// The watcher wires the pipeline: discovery → tails → sinks (parse + reduce) → detection →
// actions. File events are only wake-up hints; a periodic stat sweep is the truth.
// Hints come from one inotify watch per run directory (fs.watch: events name the file, so they
// follow a path across rotation and re-creation, where a watch on the file would stay on the old
// inode) and from chokidar on each --root (new and removed runs). With --poll, or once inotify
// watches run out, chokidar polls everything instead. Appends to a busy file are coalesced
// (tail.event-coalesce-ms); renames and new files are followed at once. A run directory busier
// than tail.busy-events appends per window is polled on a timer instead, while its entries stay
// as they are (see startPolling). On local disks tails use direct system calls; with --poll
// (NFS, Lustre) they go through the thread pool. With file events on, the periodic sweep is a
// safety net with a budget (see pickRuns); with --poll it is the witness and visits everything.
import { hostname } from 'node:os';
import { basename, join, sep } from 'node:path';
import { constants as fsc, existsSync, statSync, watch as fsWatch, type FSWatcher as DirWatcher } from 'node:fs';
import { lstat, open, stat } from 'node:fs/promises';
import { watch as chokidarWatch, type FSWatcher } from 'chokidar';
import type { Config, Thresholds } from '../config/settings.js';
import { thresholdsOf } from '../config/settings.js';
import { detectRun, nextStallDeadline, primaryOf, stallDeadlines, type Anomaly, type RunFacts, type StallDeadline } from '../detect/detect.js';
import { kindOf } from '../detect/kinds.js';
import type { Logger } from '../log.js';
import { Actions, type RunRef, type TrainerProc } from '../actions/actions.js';
import { CONTROL_FILES } from '../actions/files.js';
import { BOOT_WINDOW_S, procFact, processStartTimeSync, startedAsWriter } from '../actions/signals.js';
import { DiscoveryCache, discoverRuns, listRunFiles, listRunFilesSync, roleOf } from '../source/discover.js';
import { ASYNC_IO, FileTail, SYNC_IO } from '../source/tail.js';
import { attemptKeyOf, haltAuthor, isNewAttempt, livenessOf, newestRecordTs, parseHaltLine, runStateOf, type HaltFact, type Liveness, type ProcFact, type StateOf } from '../state/lifecycle.js';
import type { RankState, ReduceParams } from '../state/rank.js';
import { nameApart } from '../source/names.js';
import type { CsvState } from '../state/run.js';
import { ParsePool } from './parse-pool.js';
import { CsvSink, HeartbeatSink, type ParallelParse, type RankTable } from './sinks.js';
import { Stats } from './stats.js';
import { planSweep, SWEEP_PASS } from './sweep-plan.js';

/** Runs swept together between two yields to the event loop. */
const SWEEP_BATCH = 16;

/** A polled run goes back to its inotify watch after this many polls that read nothing new. */
const QUIET_POLLS = 8;
/**
 * A run directory whose entries changed less than this long ago is not polled: a rotation may be
 * under way (its renames are followed at once on file events), and a change within one timestamp
 * tick of the stat that starts polling would not move the mtime.
 */
const DIR_SETTLE_MS = 2000;

/**
 * How long a rotated-away heartbeat file is still read: the trainer opens, writes, closes, and
 * a rename between its open and its write (GIL switches make that milliseconds) puts the
 * record in the old file after our drain. The descriptor is released at the next poll after.
 */
const ROTATE_GRACE_MS = 1000;

/** A run with no record for this long has its trainers' processes looked at on each evaluation. */
const QUIET_S = 1;
/**
 * The longest timer set: a deadline further ahead (a clock far off, `ts` in milliseconds) is
 * re-armed from there. setTimeout takes at most 2^31-1 ms and fires at once (every 1 ms, for
 * ever) past that.
 */
const MAX_TIMER_MS = 3_600_000;
/** Rotated copies that keep a gone rank file's rank: the trainer's next append re-creates the file. */
const ROTATED_SUFFIXES = ['.gz', '.1', '.1.gz', '.old'];

/** One watched run: its files, its ranks and what detection sees now. */
export class Run implements RankTable, RunRef {
  ranks = new Map<number, RankState>();
  csv?: CsvState;
  tails = new Map<string, FileTail>();
  /** each tail's sink, to forget a deleted rank file's ranks */
  sinks = new Map<string, { reset(): void }>();
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
  /** each rank's stall deadline, as detection judged it last */
  deadlines = new Map<number, StallDeadline>();
  /** the directory inode this run instance lives in; a re-created directory is a new instance */
  instanceIno = -1;
  expired = false;
  anomalies: Anomaly[] = [];
  dirty = false;
  timer: NodeJS.Timeout | undefined;
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

  constructor(
    public name: string,
    readonly dir: string,
    readonly real: string,
    private readonly onTouched: (run: Run) => void,
  ) {}

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

/** Options beyond the config, mostly for tests. */
export interface WatcherOptions {
  /** the clock, in seconds; detection itself never reads it */
  now?: () => number;
}

/** Watches every run and keeps its state, metrics and actions current. */
export class Watcher {
  readonly runs = new Map<string, Run>();
  /** run directory (as discovered) → run, for file events */
  private readonly byDir = new Map<string, Run>();
  readonly stats = new Stats();
  readonly thresholds: Thresholds;
  readonly actions: Actions;
  readonly now: () => number;
  private readonly params: ReduceParams;
  /** big reads are also parsed on this thread (tail.parse-thread-bytes > 0) */
  private readonly parallel: ParallelParse | undefined;
  private fsw: FSWatcher | undefined;
  /** file events come from chokidar polling (--poll, or inotify exhausted) */
  private polling = false;
  private sweepTimer: NodeJS.Timeout | undefined;
  private evalTimer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  /** a sweep was asked for while one ran: run another after it */
  private sweepAgain = false;
  /** the next sweep visits every run (startup, lost file events) */
  private sweepAll = true;
  private sweepSeq = 0;
  /** runs whose directory may be gone: visited by the next sweep whatever its budget */
  private readonly sweepSoon = new Set<Run>();
  private readonly discovery = new DiscoveryCache();
  /** busy run directories polled on a timer instead of woken by each append */
  private readonly polledRuns = new Set<Run>();
  private busyTimer: NodeJS.Timeout | undefined;
  private busyPolling: Promise<void> | undefined;
  private readonly busyEvents: number;
  private started = false;
  private stopped = false;
  private readonly dirtyRuns = new Set<Run>();
  private readonly coalesceMs: number;
  private readonly coalesced = new Set<FileTail>();
  private readonly lastEventPoll = new WeakMap<FileTail, number>();
  private pumpTimer: NodeJS.Timeout | undefined;
  private evalScheduled = false;
  /** true once the first sweep has read every file that existed at startup */
  ready = false;
  /** warnings already logged (key → error), so that a lasting problem is logged once, not every sweep */
  private readonly warned = new Map<string, string>();
  private warnedNow = new Set<string>();
  /** trainer pids seen alive on this host (watch.pid-check auto: only those can be seen gone) */
  private readonly seenAlive = new Set<number>();

  constructor(
    readonly config: Config,
    private readonly log: Logger,
    opts: WatcherOptions = {},
  ) {
    this.now = opts.now ?? (() => Date.now() / 1000);
    this.thresholds = thresholdsOf(config);
    this.coalesceMs = config['tail.event-coalesce-ms'];
    // Polling every 0 ms is no saving: without coalescing every run stays on file events.
    this.busyEvents = this.coalesceMs > 0 ? config['tail.busy-events'] : 0;
    const t = this.thresholds;
    this.params = { gateEntropyMin: t.gateEntropyMin, gateMaxThreshold: t.gateMaxThreshold, gateCollapseFrac: t.gateCollapseFrac, fetchStallRatio: t.fetchStallRatio, fetchWarmupN: t.fetchWarmupN };
    const minBytes = config['tail.parse-thread-bytes'];
    // The thread failing costs speed only: its batches are parsed here from the same bytes.
    const pool = minBytes > 0 ? new ParsePool((detail) => this.log.warn({ detail }, 'the parse thread failed; parsing on the main thread from now on')) : undefined;
    this.parallel = pool && { pool, minBytes };
    this.actions = new Actions({
      halt: config.halt,
      by: `trainwatch@${hostname()}:${process.pid}`,
      escalateS: config['watch.escalate-s'],
      escalateTermS: config['watch.escalate-term-s'],
      escalateKillS: config['watch.escalate-kill-s'],
      autoClearHalt: config['watch.auto-clear-halt'],
      log,
      stats: this.stats,
    });
  }

  /** Whether the embedded detector writes control files (mode embedded). */
  get acting(): boolean {
    return this.config.mode === 'embedded';
  }

  /** Reads what exists, then follows changes. */
  async start(): Promise<void> {
    for (const p of [...this.config.dir, ...this.config.root]) {
      if (!(await exists(p))) this.log.warn({ path: p }, 'directory does not exist (yet); watching for it. Check the path if this is a typo');
    }
    await this.sweep();
    this.started = true;
    this.ready = true;
    this.startFileEvents(this.config.poll);
    const sweepMs = this.config['tail.sweep-interval-s'] * 1000;
    // A tick that finds a sweep still running is skipped (sweeps over a slow NFS mount may take longer).
    this.sweepTimer = setInterval(() => {
      if (!this.sweeping) void this.sweep();
    }, sweepMs);
    this.evalTimer = setInterval(() => void this.evaluateAll(), this.config['watch.interval-s'] * 1000);
  }

  /** Stops timers, file events and tails. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweepTimer);
    clearInterval(this.evalTimer);
    clearTimeout(this.pumpTimer);
    clearInterval(this.busyTimer);
    await this.busyPolling?.catch(() => undefined);
    await this.fsw?.close().catch(() => undefined);
    await this.sweeping?.catch(() => undefined);
    for (const run of this.runs.values()) {
      clearTimeout(run.timer);
      this.unwatchDir(run);
      for (const t of run.tails.values()) await t.close();
    }
    await this.parallel?.pool.close();
    await this.actions.close();
  }

  /**
   * One stat sweep: discover runs and files, poll tails, evaluate what may have changed. `all`:
   * visit every run (file events may have been lost); otherwise a sweep with file events on is
   * budgeted.
   */
  sweep(all = false): Promise<void> {
    if (all) {
      this.sweepAll = true;
      this.discovery.clear();
    }
    if (this.sweeping) {
      // This one may be past the point that would have seen what prompted the request.
      this.sweepAgain = true;
      return this.sweeping;
    }
    this.sweeping = this.doSweep()
      .catch((e) => this.log.error({ err: (e as Error).message }, 'sweep failed; retrying at the next interval'))
      .finally(() => {
        this.sweeping = undefined;
        if (this.sweepAgain && !this.stopped) {
          this.sweepAgain = false;
          void this.sweep();
        }
      });
    return this.sweeping;
  }

  /** A sweep that lists the roots afresh, and visits `run` (whose directory may be gone). */
  private rediscover(run?: Run): void {
    this.discovery.clear();
    if (run) this.sweepSoon.add(run);
    void this.sweep();
  }

  private async doSweep(): Promise<void> {
    this.warnedNow = new Set();
    const seq = ++this.sweepSeq;
    // Without file events (--poll, NFS) the sweep is the only witness: no shortcuts. With them,
    // the roots are listed again once their entries changed, and once per pass anyway (a file
    // system whose directory times do not move).
    const events = this.started && !this.polling;
    if (seq % SWEEP_PASS === 0) this.discovery.clear();
    const locs = await discoverRuns(
      this.config.dir,
      this.config.root,
      (path, err) => this.warnOnce(`dir:${path}`, err.message, { path }, /symlink loop|ELOOP/.test(err.message) ? 'skipping directory: symlink loop' : 'cannot read directory; check its permissions'),
      events ? this.discovery : undefined,
    );
    const seen = new Set<string>();
    const names = nameApart(locs);
    for (const loc of locs) {
      seen.add(loc.real);
      let run = this.runs.get(loc.real);
      const name = names.get(loc) ?? loc.name;
      if (run && run.instanceIno !== loc.ino) {
        // Deleted and re-created (rm -rf, then a new trainer): nothing of the old run applies.
        await this.dropRun(run, 'directory re-created');
        run = undefined;
      }
      if (run) {
        run.seenIno = loc.ino;
        if (run.name !== name) {
          this.log.info({ run: name, was: run.name, dir: run.dir }, 'another watched run has the same name: labelled by its parent directories');
          run.name = name;
        }
      }
      if (!run) {
        run = new Run(name, loc.dir, loc.real, (r) => this.markDirty(r));
        run.seenIno = loc.ino;
        run.instanceIno = loc.ino;
        this.runs.set(loc.real, run);
        this.byDir.set(run.dir, run);
        if (this.started) this.log.info({ run: run.name, dir: run.dir }, 'new run');
        if (this.polling) this.fsw?.add(run.dir);
      }
    }
    for (const [real, run] of this.runs) {
      if (!seen.has(real)) await this.dropRun(run, 'directory gone');
    }
    const runs = events && !this.sweepAll ? this.pickRuns() : [...this.runs.values()];
    this.sweepAll = false;
    // In batches, yielding in between: with direct system calls a sweep of 10,000 files would
    // otherwise run as one long task and hold up scrapes and timers. (Small batches also keep
    // the first sweep's reads from sizing the heap.)
    for (let i = 0; i < runs.length; i += SWEEP_BATCH) {
      await Promise.all(
        runs.slice(i, i + SWEEP_BATCH).map((run) => {
          run.sweptAt = seq;
          this.sweepSoon.delete(run);
          return this.sweepRun(run);
        }),
      );
      if (i + SWEEP_BATCH < runs.length) await new Promise<void>((r) => setImmediate(r));
    }
    // Only a look at the processes sees a trainer exit: every quiet run, every sweep.
    const changed = new Set(runs);
    const now = this.now();
    for (const run of this.runs.values()) {
      const newest = run.newestTs();
      if (newest !== undefined && now - newest > QUIET_S && this.refreshProcs(run, true)) changed.add(run);
    }
    // A discovery problem not seen in this sweep is over: if it comes back, it is logged again.
    // (Listing problems end when that run's listing works again.)
    for (const k of this.warned.keys()) if (k.startsWith('dir:') && !this.warnedNow.has(k)) this.warned.delete(k);
    // New records evaluate their run at once, a stall has its timer and NSA_WATCH_INTERVAL_S
    // re-evaluates everything: after a sweep, the runs it visited (.HALT may have come or gone),
    // those whose trainers came or went, and those with something to act on (escalation after
    // .HALT, a failed write to retry). At 10,000 ranks evaluating every run took 7 ms and 9 MB
    // of garbage per sweep.
    for (const run of this.runs.values()) if (run.halted || run.anomalies.length > 0) changed.add(run);
    await Promise.all([...changed].map((r) => this.evaluate(r)));
  }

  /**
   * The runs a sweep with file events on visits. Events report appends, renames, new files and
   * .HALT at once, so the sweep is a safety net with a budget (planSweep: a full pass every
   * SWEEP_PASS sweeps, 32 s at 10,000 files with the default 2 s; every sweep up to 625 files).
   * Runs that no watch covers (watch lost or failed) and runs that may be gone are visited every
   * time; polled runs never.
   */
  private pickRuns(): Run[] {
    // A polled run needs no sweep: its poll reads its files and sees its directory change.
    const runs = [...this.runs.values()].filter((r) => !r.polledDir);
    return planSweep(runs, (run) => ({ sweptAt: run.sweptAt, files: run.tails.size, due: !run.dirWatch || this.sweepSoon.has(run) }));
  }

  private warnOnce(key: string, err: string, fields: Record<string, unknown>, msg: string): void {
    this.warnedNow.add(key);
    if (this.warned.get(key) === err) return;
    this.warned.set(key, err);
    this.log.warn({ ...fields, err }, msg);
  }

  private async sweepRun(run: Run): Promise<void> {
    let listed = true;
    // --poll means NFS or Lustre: a hung server must block a pool thread, not the event loop.
    // Elsewhere direct system calls, as the tails use.
    const local = !this.config.poll;
    let names: string[] | undefined;
    try {
      names = local ? listRunFilesSync(run.dir) : await listRunFiles(run.dir);
    } catch (e) {
      this.warnOnce(`list:${run.dir}`, (e as Error).message, { run: run.name }, 'cannot list run directory; check its permissions');
      listed = false;
      names = [];
    }
    if (names === undefined) {
      // Gone: the next discovery drops it (listed afresh: a symlinked run's target can go
      // without its root changing).
      this.discovery.clear();
      this.sweepSoon.add(run);
      return;
    }
    if (listed) this.warned.delete(`list:${run.dir}`);
    if (this.started && !this.polling && !run.polledDir) {
      // A directory deleted and re-created under the same name: the watch is on the old inode.
      // (Discovery stat()ed every run directory; its inode is reused, not fetched again.)
      if (run.seenIno !== run.dirIno || !run.dirWatch) this.watchDir(run);
    }
    for (const name of names) if (!run.tails.has(name)) this.addTail(run, name);
    await this.observeControl(run);
    await Promise.all([...run.tails.values()].map((t) => t.poll()));
    if (listed) {
      // Files that are gone (rotated away, deleted) and were released: forget their tails, so
      // that churn cannot grow the table. A file that comes back later is new: read from 0.
      // A deleted rank file takes its ranks with it; a rotated one (a copy beside it) keeps
      // them, since the trainer's next append re-creates it.
      const present = new Set(names);
      for (const [name, tail] of run.tails) {
        if (present.has(name) || !tail.idle) continue;
        run.tails.delete(name);
        void tail.close();
        const sink = run.sinks.get(name);
        run.sinks.delete(name);
        if (sink && !ROTATED_SUFFIXES.some((x) => existsSync(join(run.dir, name + x)))) {
          sink.reset();
          this.log.info({ run: run.name, file: name }, 'rank file deleted: its ranks are no longer watched');
          run.touched();
        }
      }
    }
  }

  private addTail(run: Run, name: string): FileTail {
    const role = roleOf(name);
    const file = join(run.dir, name);
    const onReadError = (err: string) => this.log.warn({ run: run.name, file, err }, `cannot read file; check its permissions (trainwatch runs as uid ${process.getuid?.() ?? '?'}). Retrying at every sweep`);
    const sink = role === 'csv' ? new CsvSink(run, this.stats, onReadError) : new HeartbeatSink(run, this.params, this.stats, onReadError, this.parallel);
    const tail = new FileTail(file, sink, {
      maxLineBytes: this.config['tail.max-line-bytes'],
      startupBytes: this.config['tail.startup-bytes'],
      // Files present before we started hold history: read a bounded tail. Later files are new.
      startAtEnd: !this.started,
      rotateGraceMs: ROTATE_GRACE_MS,
      // --poll means NFS or Lustre, where a stat can hang: keep it off the event loop there.
      io: this.config.poll ? ASYNC_IO : SYNC_IO,
    });
    run.tails.set(name, tail);
    run.sinks.set(name, sink);
    return tail;
  }

  /**
   * Looks at .HALT (is it there, what it says, since when) and .anomaly_type. Opened with
   * O_NONBLOCK and O_NOFOLLOW: a FIFO or symlink planted there must not block or redirect us.
   */
  private async observeControl(run: Run): Promise<void> {
    const halt: HaltFact = { present: false };
    try {
      const st = await stat(join(run.dir, CONTROL_FILES.halt)); // follows a symlink, as the trainer's exists() does
      halt.present = true;
      halt.since = st.mtimeMs / 1000;
      if (st.isFile() && st.size <= 4096) halt.kind = parseHaltLine(await readSmall(join(run.dir, CONTROL_FILES.halt)));
    } catch {
      // gone, or not readable: not there for the trainer either
    }
    halt.by = haltAuthor(halt.kind, halt.present && this.actions.haltKind(run.real) === halt.kind && halt.kind !== undefined);
    run.halt = halt;
    run.halted = halt.present;
    run.anomalyType = await lexists(join(run.dir, CONTROL_FILES.anomalyType));
  }

  /**
   * Looks at the trainer processes of a run (watch.pid-check): every pid when `all` (a quiet
   * run), otherwise only pids not looked at yet. Returns whether any fact changed.
   */
  private refreshProcs(run: Run, all: boolean): boolean {
    const mode = this.config['watch.pid-check'];
    let changed = false;
    const pids = new Set<number>();
    for (const s of run.ranks.values()) {
      if (s.pid === undefined) continue;
      pids.add(s.pid);
      if (!all && run.procs.has(s.pid)) continue;
      const f = procFact({ pid: s.pid, sinceTs: s.pidSinceTs, bootTs: s.pidBootTs }, mode, this.seenAlive);
      if (run.procs.get(s.pid) !== f) changed = true;
      run.procs.set(s.pid, f);
    }
    for (const pid of run.procs.keys()) if (!pids.has(pid)) run.procs.delete(pid);
    return changed;
  }

  private async dropRun(run: Run, why: string): Promise<void> {
    this.runs.delete(run.real);
    this.byDir.delete(run.dir);
    clearTimeout(run.timer);
    this.actions.forget(run.real);
    this.stats.runsExpired++;
    this.fsw?.unwatch(run.dir);
    this.unwatchDir(run);
    this.stopPolling(run);
    this.sweepSoon.delete(run);
    for (const t of run.tails.values()) await t.close();
    this.log.info({ run: run.name, why }, 'run dropped');
  }

  private markDirty(run: Run): void {
    // While the files that existed at startup are still being read back, the state is partial
    // (one rank read, its peer not yet; a streak re-read in a larger window): judging it then
    // raises false stalls and stragglers. The end of the first sweep evaluates every run.
    if (!this.ready) return;
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
    await Promise.all([...this.runs.values()].map((r) => this.evaluate(r)));
  }

  /**
   * Runs detection on one run, works out its lifecycle state, acts on it, and arms its stall
   * timer. The order matters: acknowledgements first (an operator's removal of .HALT must be
   * known before old evidence is judged), then the processes, then detection.
   */
  async evaluate(run: Run): Promise<void> {
    if (this.stopped) return;
    run.dirty = false;
    const now = this.now();
    const ranks = [...run.ranks.values()];
    const newest = newestRecordTs(ranks);
    run.expired = newest !== undefined && now - newest > this.config['run.ttl-s'];
    const key = attemptKeyOf(ranks);
    if (key !== undefined && key !== run.attemptKey) {
      const fresh = isNewAttempt(run.attemptKey, key);
      if (fresh) this.log.info({ run: run.name, attempt: run.attempt + 1 }, 'new trainer attempt: a new process on the same rank');
      if (fresh || run.attempt === 0) run.attempt++;
      run.attemptKey = key;
    }
    await this.checkAcks(run, now);
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
    run.anomalies = run.expired ? [] : detectRun(facts, this.thresholds, now);
    run.deadlines = run.expired ? new Map() : stallDeadlines(facts, this.thresholds);
    run.primary = primaryOf(run.anomalies);
    const p = run.primary;
    run.life = runStateOf(
      { ranks, liveness: run.liveness, halt: run.halt, primary: p && { kind: p.kind, rank: p.rank, severity: kindOf(p.kind)?.severity ?? 'warning' }, expired: run.expired, crashDetect: this.thresholds.crashDetect, stallS: this.thresholds.stallS, ackTs: run.ackTs },
      now,
    );
    clearTimeout(run.timer);
    run.timer = undefined;
    if (!run.expired) {
      const deadline = nextStallDeadline(facts, this.thresholds, now);
      if (deadline !== undefined) {
        // Fire just after the deadline: the rule is "older than", not "as old as".
        run.timer = setTimeout(() => void this.evaluate(run), Math.min(MAX_TIMER_MS, Math.max(0, (deadline - now) * 1000) + 20));
        run.timer.unref();
      }
    }
    const procs: TrainerProc[] = [];
    for (const s of ranks) {
      if (s.pid === undefined) continue;
      const start = processStartTimeSync(s.pid);
      const verified = start !== undefined && startedAsWriter(start, { pid: s.pid, sinceTs: s.pidSinceTs, bootTs: s.pidBootTs }, true);
      procs.push({ pid: s.pid, lastLivenessTs: s.lastLivenessTs, verified, fact: run.procs.get(s.pid) ?? 'unknown' });
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
    }
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
    this.rediscover(run);
    return false;
  }

  /** Polls the tail of a path reported by a file event, if it belongs to a watched run. */
  private onFileEvent(path: string): void {
    const run = this.runOfPath(path);
    if (!run) {
      void this.sweep();
      return;
    }
    const name = path.slice(run.dir.length + 1);
    if (name === CONTROL_FILES.halt || name === CONTROL_FILES.anomalyType) {
      void this.observeControl(run).then(() => this.markDirty(run));
      return;
    }
    if (roleOf(name) === undefined) return;
    void (run.tails.get(name) ?? this.addTail(run, name)).poll();
  }

  /**
   * A busy file changes 10+ times a second; reading it on every event costs more than the reading.
   * A tail quiet for `tail.event-coalesce-ms` is polled at once (the first record after a pause
   * is seen immediately); events inside that window share one trailing poll at its end.
   */
  private pollSoon(tail: FileTail): void {
    if (this.coalesced.has(tail)) return; // a poll is already due
    const now = Date.now();
    if (now - (this.lastEventPoll.get(tail) ?? 0) >= this.coalesceMs) {
      this.lastEventPoll.set(tail, now);
      void tail.poll();
      return;
    }
    this.coalesced.add(tail);
    this.pumpTimer ??= setTimeout(() => {
      this.pumpTimer = undefined;
      const due = [...this.coalesced];
      this.coalesced.clear();
      const at = Date.now();
      for (const t of due) {
        this.lastEventPoll.set(t, at);
        void t.poll();
      }
    }, this.coalesceMs);
  }

  private runOfPath(path: string): Run | undefined {
    return this.byDir.get(path.slice(0, path.lastIndexOf(sep)));
  }

  private startFileEvents(usePolling: boolean): void {
    this.polling = usePolling;
    if (!usePolling) for (const run of this.runs.values()) this.watchDir(run);
    // Created even with nothing to watch yet: runs that appear later are added to it.
    const paths = usePolling ? [...this.config.root, ...[...this.runs.values()].map((r) => r.dir)] : [...this.config.root];
    const fsw = chokidarWatch(paths, {
      ignoreInitial: true,
      persistent: false,
      // Without polling, chokidar only reports runs appearing and going under each root.
      depth: usePolling ? 1 : 0,
      usePolling,
      interval: Math.max(100, this.config['tail.sweep-interval-s'] * 500),
      ignored: (p: string, st?: { isFile(): boolean }) => {
        if (!st || !st.isFile()) return false;
        const base = p.slice(p.lastIndexOf(sep) + 1);
        return roleOf(base) === undefined && base !== CONTROL_FILES.halt && base !== CONTROL_FILES.anomalyType;
      },
    });
    fsw.on('add', (p) => this.onFileEvent(p));
    fsw.on('change', (p) => this.onFileEvent(p));
    fsw.on('unlink', (p) => this.onFileEvent(p));
    // A run appearing or going under a root: list the roots afresh (a new run is visited at once).
    fsw.on('addDir', () => this.rediscover());
    fsw.on('unlinkDir', () => this.rediscover());
    fsw.on('error', (err) => {
      const e = err as NodeJS.ErrnoException;
      if (!usePolling && (e.code === 'ENOSPC' || e.code === 'EMFILE')) {
        this.fallBackToPolling(e);
        return;
      }
      // A symlink loop under a root is reported once by discovery.
      if (e.code === 'ELOOP') this.log.debug({ err: e.message }, 'file watcher: symlink loop');
      else this.log.warn({ err: e.message }, 'file watcher error; the stat sweep keeps reading');
    });
    this.fsw = fsw;
  }

  /** Out of inotify watches: keep working by polling, and say how to fix it. */
  private fallBackToPolling(e: Error): void {
    if (this.polling || this.stopped) return;
    this.polling = true;
    this.stats.pollingFallback = true;
    this.log.warn({ err: e.message }, 'inotify watches exhausted; falling back to polling. Fix: sysctl fs.inotify.max_user_watches=524288 (and max_user_instances)');
    for (const run of this.runs.values()) {
      this.unwatchDir(run);
      this.stopPolling(run);
    }
    const old = this.fsw;
    this.fsw = undefined;
    void (old ? old.close().catch(() => undefined) : Promise.resolve()).then(() => {
      if (!this.stopped) this.startFileEvents(true);
    });
  }

  /** One inotify watch on a run directory; its events name the file that changed. */
  private watchDir(run: Run): void {
    this.unwatchDir(run);
    if (this.polling || this.stopped) return;
    try {
      run.dirIno = statSync(run.dir).ino;
      const w = fsWatch(run.dir, { persistent: false }, (type, name) => {
        // The hot path (an append to a file already tailed) skips the path arithmetic. Only
        // appends are coalesced: a rename or a new file is followed at once, or a quick second
        // rotation could take a whole file away before we opened it.
        const tail = name && type === 'change' ? run.tails.get(name.toString()) : undefined;
        if (tail) {
          if (this.busyEvents > 0 && this.busy(run)) return; // polled from now on: the next poll reads it
          this.pollSoon(tail);
        } else if (name) {
          // An event that names the directory itself: it was deleted or moved, and the watch with it.
          if (type === 'rename' && name.toString() === basename(run.dir)) this.rediscover(run);
          else this.onFileEvent(join(run.dir, name.toString()));
        } else void this.sweep(true); // the kernel's event queue overflowed: events were lost
      });
      // The directory went away, or the kernel dropped the watch: the sweep re-arms it.
      w.on('error', () => {
        w.close();
        if (run.dirWatch === w) run.dirWatch = undefined;
      });
      run.dirWatch = w;
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'ENOSPC' || err.code === 'EMFILE') this.fallBackToPolling(err);
      // ENOENT, EACCES: the sweep drops the run or retries the watch.
    }
  }

  private unwatchDir(run: Run): void {
    run.dirWatch?.close();
    run.dirWatch = undefined;
  }

  /** Counts an append to a watched run; past tail.busy-events in one window, polls the run instead. */
  private busy(run: Run): boolean {
    const now = Date.now();
    if (now - run.windowStart >= this.coalesceMs) {
      run.windowStart = now;
      run.windowEvents = 0;
    }
    if (++run.windowEvents <= this.busyEvents) return false;
    run.windowEvents = 0; // if it cannot switch now, try again after as many events
    return this.startPolling(run, now);
  }

  /**
   * Each append wakes the process, though a busy file is read at most once per window anyway. A
   * polled run costs one timer tick per window for all polled runs, and a stat of its directory
   * and of each of its files. The directory's times move when a file in it is created, renamed
   * or deleted (a rotation, a new rank, .HALT), not when one is appended to: the poll that sees
   * them moved puts the run back on file events, which follow renames as they happen. (So a file
   * created and rotated away again within one window of a polled run is not read.)
   */
  private startPolling(run: Run, now: number): boolean {
    let st;
    try {
      st = statSync(run.dir);
    } catch {
      return false;
    }
    if (st.ino !== run.dirIno || now - st.mtimeMs < DIR_SETTLE_MS || now - st.ctimeMs < DIR_SETTLE_MS) return false;
    this.unwatchDir(run);
    run.polledDir = { ino: st.ino, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
    run.quietPolls = 0;
    this.polledRuns.add(run);
    this.busyTimer ??= setInterval(() => void this.pollBusy(), this.coalesceMs);
    this.log.debug({ run: run.name }, 'busy run: polling its files instead of waking on each append');
    return true;
  }

  /** Ends polling; with `rewatch`, back to the inotify watch, then one sweep of the run for what came in between. */
  private stopPolling(run: Run, rewatch = false): void {
    if (!run.polledDir) return;
    run.polledDir = undefined;
    this.polledRuns.delete(run);
    if (this.polledRuns.size === 0) {
      clearInterval(this.busyTimer);
      this.busyTimer = undefined;
    }
    if (!rewatch || this.stopped) return;
    this.watchDir(run);
    this.log.debug({ run: run.name }, 'run watched again');
    void this.sweepRun(run).then(
      () => this.evaluate(run),
      () => undefined, // the periodic sweep reports it
    );
  }

  /** Every window: a polled run whose directory changed goes back to file events; the others' files are read. */
  private pollBusy(): Promise<void> {
    if (this.busyPolling) return this.busyPolling; // a slow tick: this one is skipped
    this.busyPolling = (async () => {
      let n = 0;
      for (const run of [...this.polledRuns]) {
        if (!run.polledDir) continue; // dropped meanwhile
        if (!dirUnchanged(run.dir, run.polledDir)) {
          this.stopPolling(run, true);
          continue;
        }
        const before = run.records;
        await Promise.all([...run.tails.values()].map((t) => t.poll()));
        if (run.records !== before) run.quietPolls = 0;
        else if (++run.quietPolls >= QUIET_POLLS) this.stopPolling(run, true);
        if (++n % SWEEP_BATCH === 0) await new Promise<void>((r) => setImmediate(r));
      }
    })()
      .catch((e) => this.log.error({ err: (e as Error).message }, 'polling busy runs failed; the sweep keeps reading them'))
      .finally(() => {
        this.busyPolling = undefined;
      });
    return this.busyPolling;
  }

  /** Run directories polled instead of watched (busy ones). */
  runsPolled(): number {
    return this.polledRuns.size;
  }

  /** The run a name refers to (the `run` label). */
  runByName(name: string): Run | undefined {
    for (const r of this.runs.values()) if (r.name === name) return r;
    return undefined;
  }

  /** Tails currently holding an open file. */
  openFiles(): number {
    let n = 0;
    for (const r of this.runs.values()) for (const t of r.tails.values()) if (t.isOpen) n++;
    return n;
  }

}

/** Whether a directory is still the one stat()ed before (same inode, no entry changed since). */
function dirUnchanged(dir: string, was: { ino: number; mtimeMs: number; ctimeMs: number }): boolean {
  try {
    const st = statSync(dir);
    return st.ino === was.ino && st.mtimeMs === was.mtimeMs && st.ctimeMs === was.ctimeMs;
  } catch {
    return false; // gone: the sweep that follows drops it
  }
}

/** Reads a small file without following a symlink or waiting on a FIFO. */
async function readSmall(path: string): Promise<string> {
  const fh = await open(path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  try {
    const st = await fh.stat();
    if (!st.isFile()) return '';
    const buf = Buffer.alloc(Math.min(st.size, 4096));
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Whether a name exists in a directory (a dangling symlink counts). */
async function lexists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch {
    return false;
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

