// File events are wake-up hints; the periodic stat sweep is the truth. Hints come from one inotify
// watch per run directory (fs.watch: events name the file, so they follow a path across rotation
// and re-creation, where a watch on the file would stay on the old inode) and from chokidar on
// each --root (new and removed runs). With --poll, or once inotify watches run out, chokidar
// polls everything instead.
import { basename, join, sep } from 'node:path';
import { statSync, watch as fsWatch } from 'node:fs';
import { watch as chokidarWatch, type FSWatcher } from 'chokidar';
import { CONTROL_FILES } from '../actions/files.js';
import type { Config } from '../config/settings.js';
import type { Logger } from '../log.js';
import { roleOf } from '../source/discover.js';
import type { FileTail } from '../source/tail.js';
import type { BusyRuns } from './busy.js';
import type { Run } from './run.js';
import type { Stats } from './stats.js';

/** What file events need from the watcher around them. */
export interface EventsHost {
  readonly runs: ReadonlyMap<string, Run>;
  /** run directory (as discovered) → run */
  readonly byDir: ReadonlyMap<string, Run>;
  isStopped(): boolean;
  sweep(all?: boolean): Promise<void>;
  rediscover(run?: Run): void;
  observeControl(run: Run): Promise<void>;
  markDirty(run: Run): void;
  addTail(run: Run, name: string): FileTail;
}

/** The watcher's file events; see the header. */
export class FileEvents {
  private fsw: FSWatcher | undefined;
  /** file events come from chokidar polling (--poll, or inotify exhausted) */
  polling = false;

  constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly stats: Stats,
    private readonly busy: BusyRuns,
    private readonly host: EventsHost,
  ) {}

  /** A run appeared: with chokidar polling, its directory is added to it. */
  added(run: Run): void {
    if (this.polling) this.fsw?.add(run.dir);
  }

  /** A run went away. */
  removed(run: Run): void {
    this.fsw?.unwatch(run.dir);
    this.unwatchDir(run);
  }

  /** Stops every watch. */
  async close(): Promise<void> {
    await this.fsw?.close().catch(() => undefined);
    for (const run of this.host.runs.values()) this.unwatchDir(run);
  }

  /** Polls the tail of a path reported by a file event, if it belongs to a watched run. */
  private onFileEvent(path: string): void {
    const run = this.runOfPath(path);
    if (!run) {
      void this.host.sweep();
      return;
    }
    const name = path.slice(run.dir.length + 1);
    if (name === CONTROL_FILES.halt || name === CONTROL_FILES.anomalyType || name === CONTROL_FILES.profile) {
      void this.host.observeControl(run).then(() => this.host.markDirty(run));
      return;
    }
    if (roleOf(name) === undefined) return;
    void (run.tails.get(name) ?? this.host.addTail(run, name)).poll();
  }

  private runOfPath(path: string): Run | undefined {
    return this.host.byDir.get(path.slice(0, path.lastIndexOf(sep)));
  }

  start(usePolling: boolean): void {
    this.polling = usePolling;
    if (!usePolling) for (const run of this.host.runs.values()) this.watchDir(run);
    // Created even with nothing to watch yet: runs that appear later are added to it.
    const paths = usePolling ? [...this.config.root, ...[...this.host.runs.values()].map((r) => r.dir)] : [...this.config.root];
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
    fsw.on('addDir', () => this.host.rediscover());
    fsw.on('unlinkDir', () => this.host.rediscover());
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
    if (this.polling || this.host.isStopped()) return;
    this.polling = true;
    this.stats.pollingFallback = true;
    this.log.warn(
      { err: e.message },
      'inotify watches exhausted; falling back to polling. Fix: sysctl fs.inotify.max_user_watches=524288 (and max_user_instances)',
    );
    for (const run of this.host.runs.values()) {
      this.unwatchDir(run);
      this.busy.stopPolling(run);
    }
    const old = this.fsw;
    this.fsw = undefined;
    void (old ? old.close().catch(() => undefined) : Promise.resolve()).then(() => {
      if (!this.host.isStopped()) this.start(true);
    });
  }

  /** One inotify watch on a run directory; its events name the file that changed. */
  watchDir(run: Run): void {
    this.unwatchDir(run);
    if (this.polling || this.host.isStopped()) return;
    try {
      run.dirIno = statSync(run.dir).ino;
      const w = fsWatch(run.dir, { persistent: false }, (type, name) => {
        // The hot path (an append to a file already tailed) skips the path arithmetic. Only
        // appends are coalesced: a rename or a new file is followed at once, or a quick second
        // rotation could take a whole file away before we opened it.
        const tail = name && type === 'change' ? run.tails.get(name.toString()) : undefined;
        if (tail) {
          if (this.busy.busyEvents > 0 && this.busy.busy(run)) return; // polled from now on: the next poll reads it
          this.busy.pollSoon(tail);
        } else if (name) {
          // An event that names the directory itself: it was deleted or moved, and the watch with it.
          if (type === 'rename' && name.toString() === basename(run.dir)) this.host.rediscover(run);
          else this.onFileEvent(join(run.dir, name.toString()));
        } else void this.host.sweep(true); // the kernel's event queue overflowed: events were lost
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

  unwatchDir(run: Run): void {
    run.dirWatch?.close();
    run.dirWatch = undefined;
  }
}
