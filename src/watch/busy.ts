// Appends, coalesced, and busy run directories, polled. A busy file changes 10+ times a second;
// reading it on every event costs more than the reading. Appends to a tail within
// tail.event-coalesce-ms share one trailing poll; a run directory with more than
// tail.busy-events appends in one such window stops waking us per append and is polled once per
// window instead, until its directory's entries change or it goes quiet.
import { statSync } from 'node:fs';
import type { Logger } from '../log.js';
import type { FileTail } from '../source/tail.js';
import type { Run } from './run.js';

/** A polled run goes back to its inotify watch after this many polls that read nothing new. */
const QUIET_POLLS = 8;
/**
 * A run directory whose entries changed less than this long ago is not polled: a rotation may be
 * under way (its renames are followed at once on file events), and a change within one timestamp
 * tick of the stat that starts polling would not move the mtime.
 */
const DIR_SETTLE_MS = 2000;
/** Polled runs read between two yields to the event loop. */
const POLL_BATCH = 16;

/** What busy polling needs from the watcher around it. */
export interface BusyHost {
  isStopped(): boolean;
  watchDir(run: Run): void;
  unwatchDir(run: Run): void;
  sweepRun(run: Run): Promise<void>;
  evaluate(run: Run): Promise<void>;
}

/** Coalesced appends and polled busy runs; see the header. */
export class BusyRuns {
  private readonly polledRuns = new Set<Run>();
  private busyTimer: NodeJS.Timeout | undefined;
  private busyPolling: Promise<void> | undefined;
  private readonly coalesced = new Set<FileTail>();
  private readonly lastEventPoll = new WeakMap<FileTail, number>();
  private pumpTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly coalesceMs: number,
    /** appends per window past which a run is polled; 0: never */
    readonly busyEvents: number,
    private readonly log: Logger,
    private readonly host: BusyHost,
  ) {}

  /** Stops the timers and waits for a poll in progress. */
  async stop(): Promise<void> {
    clearTimeout(this.pumpTimer);
    clearInterval(this.busyTimer);
    await this.busyPolling?.catch(() => undefined);
  }

  /**
   * A busy file changes 10+ times a second; reading it on every event costs more than the reading.
   * A tail quiet for `tail.event-coalesce-ms` is polled at once (the first record after a pause
   * is seen immediately); events inside that window share one trailing poll at its end.
   */
  pollSoon(tail: FileTail): void {
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

  /** Counts an append to a watched run; past tail.busy-events in one window, polls the run instead. */
  busy(run: Run): boolean {
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
    this.host.unwatchDir(run);
    run.polledDir = { ino: st.ino, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
    run.quietPolls = 0;
    this.polledRuns.add(run);
    this.busyTimer ??= setInterval(() => void this.pollBusy(), this.coalesceMs);
    this.log.debug({ run: run.name }, 'busy run: polling its files instead of waking on each append');
    return true;
  }

  /** Ends polling; with `rewatch`, back to the inotify watch, then one sweep of the run for what came in between. */
  stopPolling(run: Run, rewatch = false): void {
    if (!run.polledDir) return;
    run.polledDir = undefined;
    this.polledRuns.delete(run);
    if (this.polledRuns.size === 0) {
      clearInterval(this.busyTimer);
      this.busyTimer = undefined;
    }
    if (!rewatch || this.host.isStopped()) return;
    this.host.watchDir(run);
    this.log.debug({ run: run.name }, 'run watched again');
    void this.host.sweepRun(run).then(
      () => this.host.evaluate(run),
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
        if (++n % POLL_BATCH === 0) await new Promise<void>((r) => setImmediate(r));
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
