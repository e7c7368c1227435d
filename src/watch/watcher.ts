// The watcher wires the pipeline: discovery and the run registry (here) → tails → sinks (parse +
// reduce) → evaluation (evaluator.ts: detection, lifecycle, actions, stall timers). File events
// (file-events.ts) are only wake-up hints; a periodic stat sweep is the truth. Appends to a busy
// file are coalesced, and a busy run directory is polled instead (busy.ts). On local disks tails
// use direct system calls; with --poll (NFS, Lustre) they go through the thread pool. With file
// events on, the periodic sweep is a safety net with a budget (see pickRuns); with --poll it is
// the witness and visits everything.
import { hostname } from 'node:os';
import { join } from 'node:path';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Config, Thresholds } from '../config/settings.js';
import { Profiles } from '../config/profiles.js';
import type { Logger } from '../log.js';
import { Actions } from '../actions/actions.js';
import { Notifier } from '../notify/notify.js';
import { DiscoveryCache, DiscoveryRetry, discoverRuns, listRunFiles, listRunFilesSync, roleOf, RunNameNotUtf8 } from '../source/discover.js';
import { nameApart } from '../source/names.js';
import { ASYNC_IO, FdBudget, FileTail, SYNC_IO } from '../source/tail.js';
import { BusyRuns } from './busy.js';
import { systemClock, type Clock } from './clock.js';
import { Evaluator, QUIET_S } from './evaluator.js';
import { FileEvents } from './file-events.js';
import { ParsePool } from './parse-pool.js';
import { Run } from './run.js';
import { CsvSink, HeartbeatSink, type ParallelParse } from './sinks.js';
import { Stats } from './stats.js';
import { planSweep, SWEEP_PASS } from './sweep-plan.js';

export { Run } from './run.js';

/** Runs swept together between two yields to the event loop. */
const SWEEP_BATCH = 16;

/**
 * How long a rotated-away heartbeat file is still read: the trainer opens, writes, closes, and
 * a rename between its open and its write (GIL switches make that milliseconds) puts the
 * record in the old file after our drain. The descriptor is released at the next poll after.
 */
const ROTATE_GRACE_MS = 1000;

/** Rotated copies that keep a gone rank file's rank: the trainer's next append re-creates the file. */
const ROTATED_SUFFIXES = ['.gz', '.1', '.1.gz', '.old'];

/** Options beyond the config, mostly for tests. */
export interface WatcherOptions {
  /** the clock and timers evaluation runs on; detection itself never reads a clock */
  clock?: Clock;
  /** never write into run directories, not even the audit log (`trainwatch status`) */
  readOnly?: boolean;
}

/** Watches every run and keeps its state, metrics and actions current. */
export class Watcher {
  readonly runs = new Map<string, Run>();
  /** run directory (as discovered) → run, for file events */
  readonly byDir = new Map<string, Run>();
  readonly stats = new Stats();
  readonly thresholds: Thresholds;
  readonly actions: Actions;
  /** --notify.exec and --notify.webhook, when configured */
  private readonly notifier: Notifier | undefined;
  readonly clock: Clock;
  /** judges runs and acts on the verdicts */
  readonly evaluator: Evaluator;
  private readonly busy: BusyRuns;
  private readonly events: FileEvents;
  /** the threshold profiles and which runs they apply to (config/profiles.ts) */
  readonly profiles: Profiles;
  /** descriptors the tails may hold at once (source/tail.ts FdBudget) */
  readonly fdBudget: FdBudget;
  /** big reads are also parsed on this thread (tail.parse-thread-bytes > 0) */
  private readonly parallel: ParallelParse | undefined;
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
  private started = false;
  private stopped = false;
  /** true once the first sweep has read every file that existed at startup */
  ready = false;
  /** warnings already logged (key → error), so that a lasting problem is logged once, not every sweep */
  private readonly warned = new Map<string, string>();
  private warnedNow = new Set<string>();

  constructor(
    readonly config: Config,
    private readonly log: Logger,
    opts: WatcherOptions = {},
  ) {
    this.clock = opts.clock ?? systemClock;
    this.profiles = new Profiles(config);
    this.fdBudget = new FdBudget(tailFdLimit(openFileLimit(), config['web.max-connections']));
    this.thresholds = this.profiles.base().thresholds;
    const coalesceMs = config['tail.event-coalesce-ms'];
    const minBytes = config['tail.parse-thread-bytes'];
    // The thread failing costs speed only: its batches are parsed here from the same bytes.
    const pool =
      minBytes > 0 ? new ParsePool((detail) => this.log.warn({ detail }, 'the parse thread failed; parsing on the main thread from now on')) : undefined;
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
      readOnly: opts.readOnly,
      onEpisode: (e) => this.notifier?.episode(e),
    });
    const notifier = opts.readOnly
      ? undefined
      : new Notifier(
          config,
          log,
          this.stats,
          () => this.actions,
          (real) => this.runs.get(real)?.life.state,
        );
    this.notifier = notifier?.enabled ? notifier : undefined;
    const host = {
      runs: this.runs,
      byDir: this.byDir,
      isReady: () => this.ready,
      isStopped: () => this.stopped,
      rediscover: (run?: Run) => this.rediscover(run),
      catchUp: async (run: Run) => {
        await Promise.all([...run.tails.values()].map((t) => t.poll()));
      },
      profiles: this.profiles,
      sweep: (all?: boolean) => this.sweep(all),
      sweepRun: (run: Run) => this.sweepRun(run),
      evaluate: (run: Run) => this.evaluator.evaluate(run),
      observeControl: (run: Run) => this.evaluator.observeControl(run),
      markDirty: (run: Run) => this.evaluator.markDirty(run),
      addTail: (run: Run, name: string) => this.addTail(run, name),
      watchDir: (run: Run) => this.events.watchDir(run),
      unwatchDir: (run: Run) => this.events.unwatchDir(run),
    };
    this.evaluator = new Evaluator(config, this.actions, log, this.clock, host);
    // Polling every 0 ms is no saving: without coalescing every run stays on file events.
    this.busy = new BusyRuns(coalesceMs, coalesceMs > 0 ? config['tail.busy-events'] : 0, log, host);
    this.events = new FileEvents(config, log, this.stats, this.busy, host);
  }

  /** The clock, in seconds (for the scrape and the status page). */
  now(): number {
    return this.clock.now();
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
    this.events.start(this.config.poll);
    const sweepMs = this.config['tail.sweep-interval-s'] * 1000;
    // A tick that finds a sweep still running is skipped (sweeps over a slow NFS mount may take longer).
    this.sweepTimer = setInterval(() => {
      if (!this.sweeping) void this.sweep();
    }, sweepMs);
    this.evalTimer = setInterval(() => void this.evaluator.evaluateAll(), this.config['watch.interval-s'] * 1000);
  }

  /** Stops timers, file events and tails. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.notifier?.stop();
    clearInterval(this.sweepTimer);
    clearInterval(this.evalTimer);
    await this.busy.stop();
    await this.events.close();
    await this.sweeping?.catch(() => undefined);
    for (const run of this.runs.values()) {
      this.clock.clearTimeout(run.timer);
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
  rediscover(run?: Run): void {
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
    const events = this.started && !this.events.polling;
    if (seq % SWEEP_PASS === 0) this.discovery.clear();
    let locs;
    try {
      locs = await discoverRuns(
        this.config.dir,
        this.config.root,
        (path, err) => {
          if (err instanceof RunNameNotUtf8 && !this.warned.has(`dir:${path}`)) this.stats.parseErrors.run_name_not_utf8++;
          this.warnOnce(
            `dir:${path}`,
            err.message,
            { path },
            err instanceof RunNameNotUtf8
              ? 'run directory skipped: its name is not UTF-8'
              : /symlink loop|ELOOP/.test(err.message)
                ? 'skipping directory: symlink loop'
                : 'cannot read directory; check its permissions',
          );
        },
        events ? this.discovery : undefined,
      );
    } catch (e) {
      if (!(e instanceof DiscoveryRetry)) throw e;
      // Out of descriptors (EMFILE/ENFILE) is not "every run is gone": keep the runs we have,
      // read them, and list the roots again next sweep.
      this.warnOnce(
        'discovery:retry',
        e.message,
        { path: e.path },
        'cannot list run directories now; the runs already watched go on being read. Retrying at the next sweep',
      );
      locs = undefined;
    }
    if (locs === undefined) {
      await Promise.all([...this.runs.values()].map((run) => this.sweepRun(run).catch(() => undefined)));
      return;
    }
    this.warned.delete('discovery:retry');
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
          run.profile = this.profiles.forRun(name, run.profileNamed);
        }
      }
      if (!run) {
        run = new Run(name, loc.dir, loc.real, (r) => this.evaluator.markDirty(r), this.profiles.forRun(name));
        run.seenIno = loc.ino;
        run.instanceIno = loc.ino;
        this.runs.set(loc.real, run);
        this.byDir.set(run.dir, run);
        if (this.started) this.log.info({ run: run.name, dir: run.dir }, 'new run');
        this.events.added(run);
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
    const now = this.clock.now();
    for (const run of this.runs.values()) {
      const newest = run.newestTs();
      if (newest !== undefined && now - newest > QUIET_S && this.evaluator.refreshProcs(run, true)) changed.add(run);
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
    await Promise.all([...changed].map((r) => this.evaluator.evaluate(r)));
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

  async sweepRun(run: Run): Promise<void> {
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
    if (names !== undefined && run.instanceIno >= 0 && (await dirIno(run.dir, local)) !== run.instanceIno) names = undefined;
    if (names === undefined) {
      // Gone, or re-created under the same name (another inode: its files belong to a new
      // instance, not to this one): the next discovery drops it (listed afresh: a symlinked
      // run's target can go without its root changing).
      this.discovery.clear();
      this.sweepSoon.add(run);
      return;
    }
    if (listed) this.warned.delete(`list:${run.dir}`);
    if (this.started && !this.events.polling && !run.polledDir) {
      // A directory deleted and re-created under the same name: the watch is on the old inode.
      // (Discovery stat()ed every run directory; its inode is reused, not fetched again.)
      if (run.seenIno !== run.dirIno || !run.dirWatch) this.events.watchDir(run);
    }
    for (const name of names) if (!run.tails.has(name)) this.addTail(run, name);
    await this.evaluator.observeControl(run);
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
          // Its ranks are no longer judged (no stall for a file that is gone); their counters stay
          // until the run expires, and a re-created file of the same rank is judged again.
          for (const r of sink.ranksRead?.() ?? []) run.goneRanks.set(r, run.ranks.get(r)?.lastLivenessTs ?? -Infinity);
          this.log.info({ run: run.name, file: name }, 'rank file deleted: its ranks are no longer judged');
          run.touched();
        }
      }
    }
  }

  addTail(run: Run, name: string): FileTail {
    const role = roleOf(name);
    const file = join(run.dir, name);
    const onReadError = (err: string, reason: string) =>
      this.log.warn(
        { run: run.name, file, err, reason },
        reason === 'read_error'
          ? `cannot read file; check its permissions (trainwatch runs as uid ${process.getuid?.() ?? '?'}). Retrying at every sweep`
          : `file problem (${reason}); see the error for the fix`,
      );
    const maxRanks = this.config['run.max-ranks'];
    const onRankCap = () =>
      this.warnOnce(
        `ranks:${run.dir}`,
        'cap',
        { run: run.name, max: maxRanks },
        `run has more than run.max-ranks (${maxRanks}) ranks: records of further ranks are dropped and counted (too_many_ranks). Fix: check the heartbeat files' rank fields, or raise run.max-ranks`,
      );
    const sink =
      role === 'csv' ? new CsvSink(run, this.stats, onReadError) : new HeartbeatSink(run, this.stats, onReadError, this.parallel, maxRanks, onRankCap);
    const tail = new FileTail(file, sink, {
      maxLineBytes: this.config['tail.max-line-bytes'],
      startupBytes: this.config['tail.startup-bytes'],
      // Files present before we started hold history: read a bounded tail. Later files are new.
      startAtEnd: !this.started,
      rotateGraceMs: ROTATE_GRACE_MS,
      // --poll means NFS or Lustre, where a stat can hang: keep it off the event loop there.
      io: this.config.poll ? ASYNC_IO : SYNC_IO,
      budget: this.fdBudget,
    });
    run.tails.set(name, tail);
    run.sinks.set(name, sink);
    return tail;
  }

  private async dropRun(run: Run, why: string): Promise<void> {
    this.runs.delete(run.real);
    this.byDir.delete(run.dir);
    this.clock.clearTimeout(run.timer);
    this.actions.forget(run.real);
    this.stats.runsExpired++;
    this.events.removed(run);
    this.busy.stopPolling(run);
    this.sweepSoon.delete(run);
    for (const t of run.tails.values()) await t.close();
    this.log.info({ run: run.name, why }, 'run dropped');
  }

  /** Re-evaluates every run (the NSA_WATCH_INTERVAL_S safety sweep). */
  evaluateAll(): Promise<void> {
    return this.evaluator.evaluateAll();
  }

  /** Runs detection on one run now. */
  evaluate(run: Run): Promise<void> {
    return this.evaluator.evaluate(run);
  }

  /** Run directories polled instead of watched (busy ones). */
  runsPolled(): number {
    return this.busy.runsPolled();
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

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/** The inode of a directory now (-2 when it cannot be stat()ed): direct on a local disk, through the pool with --poll. */
async function dirIno(dir: string, local: boolean): Promise<number> {
  try {
    return local ? statSync(dir).ino : (await stat(dir)).ino;
  } catch {
    return -2;
  }
}

/** Descriptors kept back from the tails for control files, audit logs, directory watches, the parse thread and the rest. */
export const FD_RESERVE = 256;

/** The tails' share of the descriptor limit: what is left after the HTTP connections and FD_RESERVE, at least 64. */
export function tailFdLimit(nofile: number, maxConnections: number): number {
  return Math.max(64, nofile - maxConnections - FD_RESERVE);
}

/** The process's soft limit on open files (Node raises it to the hard limit at start), from /proc/self/limits; 1024 when unknown. */
export function openFileLimit(): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (m) return m[1] === 'unlimited' ? 1 << 20 : Number(m[1]);
  } catch {
    // not Linux: the usual default
  }
  return 1024;
}
