// FileTail: the ONLY place that knows about offsets, inodes, partial lines, truncation and
// rotation. Every other module sees complete lines.
//
// A tail follows a path, not an inode. Each poll() stats the path and compares it with the
// file it holds open (dev+ino), then:
// - append (same file, size > offset): read [offset, size); complete lines are delivered, the
//   bytes after the last newline wait in `pending` until their newline arrives.
// - nothing new (size == offset): nothing happens.
// - copytruncate (same file, size < offset): first what was appended after our last read is
//   read from the copy, if a sibling `<name>*` holds our mark at our offset (readFromCopy;
//   otherwise the possible loss is counted as copytruncate_lost); then the pending partial line
//   is dropped (counted), and reading restarts at offset 0.
// - truncate and regrow to or past our offset between two polls (same file, size >= offset, and
//   it grew or mtime/ctime changed): we keep the last bytes read before `offset` (up to
//   TAIL_MARK_BYTES, a partial line included) and compare them with what the file holds there
//   now; a mismatch is a truncation, handled as above. Growth alone triggers the check because
//   coarse timestamps (NFS, older kernels) may not change within one tick. Regrowth to the very
//   same bytes is indistinguishable from no change. An unchanged mtime and size costs no read.
// - rename rotation (gzip, logrotate create) or delete/recreate (path gone, or a different
//   inode): the old handle is drained to EOF first (the writer may have appended just before
//   rotating; the truncation check above comes first, as it may have been copytruncated and
//   regrown before the rename). With rotateGraceMs it is then kept for that long and read
//   again at each poll, before the path (a writer that opened it just before the rename writes
//   a moment later; only the newest rotated file is kept), and closed at the first poll after;
//   otherwise it is closed at once. Closing also releases a deleted-but-open file. The new file,
//   if any, is read from offset 0. A partial line left at the old file's end can never
//   complete, so it is dropped and counted when the old file is closed. Because the old fd is
//   held until then, its inode cannot be reused by a recreated file while we compare: a new
//   file always has a new identity.
// - first open at startup: only a bounded window at the end of the file is read (from the
//   first newline inside it); the sink may ask for more history, and the window doubles up
//   to a cap, each time after sink.reset(). It doubles too while it holds no whole line (the
//   newest line is longer than the window), up to maxLineBytes. A file that appears after
//   startup is new: read from 0; so is one that was missing at some poll (created after it).
// - idle: after opts.idlePolls polls in a row that read nothing (and after a startup window), if
//   the file has not been modified for opts.idleMs, the descriptor is released, remembering identity, offset and partial line, exactly as after a
//   read error (below); an unchanged file is then not even opened. If the path changed identity
//   meanwhile, the released file is looked for beside it by dev+ino (a rename rotation leaves
//   it there) and drained; deleted or compressed, its unread end is beyond reach.
// - EMFILE/ENFILE on open: a read error like any other (counted, retried at the next poll), with
//   the fix in its detail; never taken for a missing file.
// - read errors (EACCES, ESTALE, EIO): counted (once per distinct error), the handle is dropped,
//   the next poll retries; if it reopens the same file (dev+ino) it continues at the offset
//   where the error struck (with the usual truncation checks), so nothing is read twice.
// - a line longer than maxLineBytes: skipped up to its newline and counted, never buffered whole.
// - a big read: the sink is told its size first (willRead) and may parse its lines in batches,
//   some on another thread; the tail awaits sink.settle() after each chunk and at the end of
//   the read, so a read is over only when every line of it has been applied, in file order.
// Nothing here parses; gz files are never opened because discovery never hands them over.
import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readSync, type Stats } from 'node:fs';
import { lstat, open, readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** An open file, as a tail uses it: FileHandle's shape, with sync or async results. */
export interface TailFile {
  stat(): Stats | Promise<Stats>;
  read(buf: Buffer, offset: number, length: number, position: number): { bytesRead: number } | Promise<{ bytesRead: number }>;
  close(): void | Promise<void>;
}

/** How a tail reaches the file system. */
export interface TailIO {
  /** lstat: a symlink is reported as one */
  stat(path: string): Stats | Promise<Stats>;
  open(path: string): TailFile | Promise<TailFile>;
  /** the names in a directory (to find a rotated-away file by identity); optional */
  list?(dir: string): string[] | Promise<string[]>;
}

/**
 * How every watched file is opened. O_NONBLOCK: a FIFO renamed over the file between our stat
 * and our open would otherwise block the open until a writer comes (the whole event loop, with
 * SYNC_IO); on a regular file it changes nothing. O_NOFOLLOW: a heartbeat file is the trainer's
 * own file, never a link (to another user's file, say). The handle's fstat then decides: only a
 * regular file is read (see NotRegularFile).
 */
export const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW;

/** Thread-pool I/O: a hung NFS server blocks a pool thread, never the event loop (--poll). */
export const ASYNC_IO: TailIO = { stat: (p) => lstat(p), open: (p) => open(p, OPEN_FLAGS), list: (d) => readdir(d) };

/**
 * Direct system calls: on a local disk a stat or a small read takes microseconds, far less than
 * a round trip through libuv's thread pool, which dominated CPU at 64 busy ranks.
 */
export const SYNC_IO: TailIO = {
  stat: (p) => lstatSync(p),
  list: (d) => readdirSync(d),
  open: (p) => {
    const fd = openSync(p, OPEN_FLAGS);
    return { stat: () => fstatSync(fd), read: (b, o, l, pos) => ({ bytesRead: readSync(fd, b, o, l, pos) }), close: () => closeSync(fd) };
  },
};

/**
 * The descriptors every tail of a process may hold at once, shared by all of them. Beyond it a
 * tail reads and closes (open-read-close) instead of keeping its file open, and an open that
 * would exceed it waits for the next poll (counted in `refused`): a run directory filled with
 * more files than the process may open must not take the descriptors that other runs' control
 * files, audit logs and HTTP clients need.
 */
export class FdBudget {
  /** descriptors held by tails now */
  held = 0;
  /** opens put off because the budget was spent */
  refused = 0;
  /** the most held at once */
  peak = 0;
  constructor(readonly limit: number) {}

  /** All of it is in use: tails release after each poll, and new opens wait. */
  get spent(): boolean {
    return this.held >= this.limit;
  }

  /** `io` with every open counted against the budget, and every close given back. */
  wrap(io: TailIO): TailIO {
    return {
      stat: (p) => io.stat(p),
      ...(io.list ? { list: (d: string) => io.list!(d) } : {}),
      open: async (p) => {
        // Counted before the open, in the same tick as the caller's check of `spent`: concurrent
        // polls cannot all pass the check and then all open.
        this.held++;
        let f: TailFile;
        try {
          f = await io.open(p);
        } catch (e) {
          this.held--;
          throw e;
        }
        this.peak = Math.max(this.peak, this.held);
        let closed = false;
        return {
          stat: () => f.stat(),
          read: (b, o, l, pos) => f.read(b, o, l, pos),
          close: async () => {
            if (closed) return;
            closed = true;
            this.held--;
            await f.close();
          },
        };
      },
    };
  }
}

async function closeQuietly(f: TailFile | undefined): Promise<void> {
  try {
    await f?.close();
  } catch {
    // already closed, or the file system went away
  }
}

/** What a tail reports when something could not be delivered as a line (parse error reasons). */
export type TailErrorReason = 'line_too_long' | 'partial_line_dropped' | 'read_error' | 'not_regular_file' | 'sparse_skip' | 'copytruncate_lost';

/** Receives what a tail reads. */
export interface TailSink {
  /** Called before a startup window is (re)read: forget what this file contributed. */
  reset(): void;
  /** One complete line, without its newline: bytes [start, end) of buf. */
  line(buf: Buffer, start: number, end: number): void;
  /** Something that could not be delivered as a line. */
  error(reason: TailErrorReason, detail?: string): void;
  /** After a startup window: does the state still reach back past the window's start? */
  wantsMoreHistory(): boolean;
  /** Bytes read from the file (for self-metrics). */
  bytes(n: number): void;
  /** Optional: a read of this many bytes starts (a big one may be parsed in batches, off-thread). */
  willRead?(bytes: number): void;
  /**
   * Optional: awaited after each chunk of a read (final: false; the sink may hold back the
   * tail while it catches up) and at the end of the read (final: true; every line delivered
   * must be applied when it resolves, before the tail checks history or reports the read done).
   */
  settle?(final: boolean): Promise<void>;
}

/** Tail options. */
export interface TailOptions {
  maxLineBytes: number;
  /** first startup window; it may double up to STARTUP_MAX_FACTOR times this */
  startupBytes: number;
  /** true for a file that existed before trainwatch started: start near the end */
  startAtEnd: boolean;
  /**
   * After a rotation, keep reading the old file for this long (at each poll) before closing it:
   * a writer that opened it just before the rename writes its record there a moment later.
   * 0 (the default) closes it as soon as it has been drained.
   */
  rotateGraceMs?: number;
  /** system calls (SYNC_IO) or the thread pool (ASYNC_IO, the default) */
  io?: TailIO;
  /**
   * Release the descriptor after this many polls in a row that found nothing new (default
   * IDLE_POLLS; 0 keeps it open): one fd per tailed file would run out at tens of thousands.
   */
  idlePolls?: number;
  /**
   * ...and only once the file's mtime is at least this old (default IDLE_MS): a file written a
   * moment ago may be appended to and rotated away (gzip) before the next poll, and only a
   * held descriptor can still read what it got.
   */
  idleMs?: number;
  /** the process's descriptor budget for tails (FdBudget); none: unbounded */
  budget?: FdBudget;
}

/** A rotated-away file still read for a moment (see rotateGraceMs). */
interface Retired {
  fh: TailFile;
  offset: number;
  pending: Buffer | undefined;
  discarding: boolean;
  until: number;
}

const READ_CHUNK = 1 << 20;
/** Polls without anything new after which a tail releases its descriptor (see release). */
export const IDLE_POLLS = 2;
/** ...if the file has not been modified for this long. */
export const IDLE_MS = 30_000;
/** At most this many names like `<file>*` are stat()ed when looking for a rotated-away file. */
const MAX_SIBLINGS = 64;
/** At most this much of a copytruncate copy is read to recover what the truncation took. */
const MAX_COPY_BYTES = 16 << 20;
/** A read of at least this many NUL bytes is a hole, skipped by probing (see skipHole). */
const HOLE_BYTES = 64 << 10;
/** The probe size when looking for the end of a hole. */
const HOLE_PROBE = 4096;
const ZEROS = Buffer.alloc(READ_CHUNK);

/** The first NUL byte in buf[pos, end), or -1. */
function nulIn(buf: Buffer, pos: number, end: number): number {
  const i = buf.indexOf(0, pos);
  return i >= end ? -1 : i;
}

/** Same device, inode and birth time (0 where the file system keeps none). */
function sameFile(st: Stats, id: { dev: number; ino: number; birth: number }): boolean {
  return st.dev === id.dev && st.ino === id.ino && st.birthtimeMs === id.birth;
}

/** Whether the first n bytes of buf are all NUL. */
function allNul(buf: Buffer, n: number): boolean {
  return buf.compare(ZEROS, 0, n, 0, n) === 0;
}
// 128, not 64: the last 64 bytes of a record are often only its constant fields (pad, loss,
// toks_per_s), so a regrown file matched them about once in 700 truncations; 128 reach back
// to the step or ts, which never repeat.
const TAIL_MARK_BYTES = 128;
const STARTUP_MAX_FACTOR = 64;

/** Follows one path across appends, truncation and rotation. */
export class FileTail {
  private fh: TailFile | undefined;
  private readonly io: TailIO;
  private dev = -1;
  private ino = -1;
  private offset = 0;
  private pending: Buffer | undefined;
  private discarding = false;
  /** complete lines seen so far (delivered or too long) */
  private lines = 0;
  /** the last bytes read, up to TAIL_MARK_BYTES, ending at `offset` */
  private mark: Buffer | undefined;
  /** file position just past the mark's last byte */
  private markEnd = 0;
  /** times of the last poll: a change with no growth may be a truncate-and-regrow to the same size */
  private mtimeMs = -1;
  private ctimeMs = -1;
  private startAtEnd: boolean;
  private retired: Retired | undefined;
  /** where a read error left the file: reopening the same file continues there */
  private resume:
    { dev: number; ino: number; birth: number; offset: number; mark: Buffer | undefined; pending: Buffer | undefined; discarding: boolean } | undefined;
  /** birth time of the open file: with no descriptor held, a deleted file's inode number is reused at once */
  private birth = 0;
  /** the descriptor was released because the file was idle (resume holds where we were) */
  private parked = false;
  /** polls in a row that read nothing */
  private idleCount = 0;
  private running: Promise<void> | undefined;
  private again = false;
  private closed = false;
  private lastError: string | undefined;
  /** owner uid of the regular file at the path, as of the last poll (escalation's proof of the writer) */
  private owner: number | undefined;

  /** The uid owning the regular file at the path at the last poll; undefined before one, or while it is not a regular file. */
  get ownerUid(): number | undefined {
    return this.owner;
  }

  constructor(
    readonly path: string,
    private readonly sink: TailSink,
    private readonly opts: TailOptions,
  ) {
    this.startAtEnd = opts.startAtEnd;
    this.io = opts.budget ? opts.budget.wrap(opts.io ?? ASYNC_IO) : (opts.io ?? ASYNC_IO);
  }

  /** True while the file at the path is open (a rotated-away file in its grace period is not counted). */
  get isOpen(): boolean {
    return this.fh !== undefined;
  }

  /** No file open and no poll running: dropping this tail loses nothing (a new one reads from 0). */
  get idle(): boolean {
    return this.fh === undefined && this.retired === undefined && this.running === undefined;
  }

  /** Reads whatever is new. Concurrent calls coalesce into one more pass. */
  poll(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.again = false;
          await this.pollOnce();
        } while (this.again && !this.closed);
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  /** Releases the file handle; later polls do nothing. */
  async close(): Promise<void> {
    this.closed = true;
    await this.running?.catch(() => undefined);
    await this.dropHandle();
    await this.endRetired();
  }

  private async pollOnce(): Promise<void> {
    if (this.closed) return;
    if (this.retired) await this.readRetired();
    let st;
    try {
      st = await this.io.stat(this.path);
    } catch (e) {
      this.owner = undefined;
      const code = (e as NodeJS.ErrnoException).code;
      // Gone (rotated away or deleted): finish the old file, then wait for a new one. Whatever
      // appears at the path from now on was created after we started: it is read from 0.
      if (this.fh) await this.finishOldFile();
      else if (this.resume) await this.finishReleased();
      this.startAtEnd = false;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') this.reportError('read_error', `stat: ${(e as Error).message}`);
      return;
    }
    this.owner = st.isFile() ? st.uid : undefined;
    if (!st.isFile()) {
      // Not our file any more (a FIFO, a symlink, a directory renamed over it): finish the old
      // one, refuse this one; a regular file that comes back later is new.
      if (this.fh) await this.finishOldFile();
      else if (this.resume) await this.finishReleased();
      this.startAtEnd = false;
      this.refuse(st);
      return;
    }
    if (this.fh && (st.ino !== this.ino || st.dev !== this.dev)) {
      await this.finishOldFile();
    }
    if (!this.fh && this.resume && !sameFile(st, this.resume)) await this.finishReleased();
    if (!this.fh) {
      const r = this.resume;
      // Released while idle and still the same, unchanged file: nothing to read, no open needed.
      if (this.parked && r && st.size === r.offset && st.mtimeMs === this.mtimeMs && st.ctimeMs === this.ctimeMs) return;
      if (!(await this.openFile())) return;
      if (this.startAtEnd) {
        this.startAtEnd = false;
        await this.readStartupWindow(st.size);
        this.mtimeMs = st.mtimeMs;
        this.ctimeMs = st.ctimeMs;
        // At startup every existing file is read once: holding each one's descriptor after that
        // would need as many as there are files. The busy ones are reopened at their next change.
        if (this.fh && (this.mayRelease(st) || this.opts.budget?.spent)) await this.release(true);
        return;
      }
    }
    // Growth is checked too, not only changed times: on file systems with coarse timestamps
    // (NFS, older kernels) a truncate-and-regrow within one tick leaves mtime and ctime as they were.
    const changed = st.mtimeMs !== this.mtimeMs || st.ctimeMs !== this.ctimeMs || st.size > this.offset;
    let truncated = st.size < this.offset;
    if (!truncated && changed && this.offset > 0) {
      try {
        truncated = !(await this.markStillThere());
      } catch (e) {
        await this.readFailed(e as Error);
        return;
      }
    }
    if (truncated) await this.truncated();
    const before = this.offset;
    if (st.size > this.offset) await this.readTo(st.size);
    this.mtimeMs = st.mtimeMs;
    this.ctimeMs = st.ctimeMs;
    if (truncated || this.offset !== before) this.idleCount = 0;
    else if (this.fh && ++this.idleCount >= (this.opts.idlePolls ?? IDLE_POLLS) && this.mayRelease(st)) await this.release(true);
    // The budget is spent: read and close. A record written and rotated away (compressed)
    // before the next poll is then out of reach, which a held descriptor would still have read.
    if (this.fh && this.opts.budget?.spent) await this.release(true);
  }

  /** Whether an idle file may give up its descriptor: idle release is on and the file has been quiet long enough. */
  private mayRelease(st: Stats): boolean {
    return (this.opts.idlePolls ?? IDLE_POLLS) > 0 && Date.now() - st.mtimeMs >= (this.opts.idleMs ?? IDLE_MS);
  }

  /**
   * The file we released (idle, or after a read error) is no longer at the path. A logrotate
   * rename leaves it beside the path (`<name>.1`, `<name>-20260101`): found by its identity, it
   * is drained from where we were, as a held file would be. Otherwise (deleted, compressed)
   * whatever it got since our last poll is beyond reach.
   */
  private async finishReleased(): Promise<void> {
    const r = this.resume!;
    this.resume = undefined;
    this.parked = false;
    const fh = await this.openSibling((st) => sameFile(st, r));
    if (!fh) {
      if (r.pending && r.pending.length > 0) this.sink.error('partial_line_dropped', this.path);
      return;
    }
    this.fh = fh;
    this.dev = r.dev;
    this.ino = r.ino;
    this.birth = r.birth;
    this.offset = this.markEnd = r.offset;
    this.mark = r.mark;
    this.pending = r.pending;
    this.discarding = r.discarding;
    await this.finishOldFile();
  }

  /** Opens the first file beside ours (`<name>` followed by anything) whose lstat `matches` (and that passes `verify`). */
  private async openSibling(matches: (st: Stats) => boolean, verify?: (fh: TailFile) => Promise<boolean>): Promise<TailFile | undefined> {
    const dir = dirname(this.path);
    const base = basename(this.path);
    let names: string[];
    try {
      names = (await this.io.list?.(dir)) ?? [];
    } catch {
      return undefined;
    }
    let tried = 0;
    for (const name of names) {
      if (name === base || !name.startsWith(base) || name.endsWith('.gz')) continue;
      if (++tried > MAX_SIBLINGS) break;
      let fh: TailFile | undefined;
      try {
        if (!matches(await this.io.stat(join(dir, name)))) continue;
        fh = await this.io.open(join(dir, name));
        const st = await fh.stat();
        if (st.isFile() && matches(st) && (!verify || (await verify(fh)))) return fh;
      } catch {
        // gone meanwhile, or unreadable: not the one
      }
      await closeQuietly(fh);
    }
    return undefined;
  }

  private async openFile(): Promise<boolean> {
    if (this.opts.budget?.spent) {
      this.opts.budget.refused++;
      return false; // the next poll tries again; nothing was read, so nothing is lost
    }
    try {
      this.fh = await this.io.open(this.path);
      // The path may have been swapped between stat and open; trust the handle's identity.
      const st = await this.fh.stat();
      if (!st.isFile()) {
        await closeQuietly(this.fh);
        this.fh = undefined;
        this.startAtEnd = false;
        this.refuse(st);
        return false;
      }
      this.dev = st.dev;
      this.ino = st.ino;
      this.birth = st.birthtimeMs;
      this.offset = 0;
      this.pending = undefined;
      this.discarding = false;
      this.mark = undefined;
      this.lastError = undefined;
      const r = this.resume;
      this.resume = undefined;
      this.parked = false;
      if (r && sameFile(st, r)) {
        // The same file after a read error: continue where we were (the truncation check runs as usual).
        this.offset = this.markEnd = r.offset;
        this.mark = r.mark;
        this.pending = r.pending;
        this.discarding = r.discarding;
      } else if (r?.pending && r.pending.length > 0) {
        this.sink.error('partial_line_dropped', this.path);
      }
      return true;
    } catch (e) {
      await closeQuietly(this.fh);
      this.fh = undefined;
      // ELOOP from O_NOFOLLOW: a symlink was renamed over the file after our lstat.
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ELOOP') this.refuse(undefined);
      // Out of descriptors: not this file's fault, and never "gone"; the next poll retries.
      else if (code === 'EMFILE' || code === 'ENFILE')
        this.reportError(
          'read_error',
          `open: ${(e as Error).message}. Fix: raise the open-files limit (ulimit -n, systemd LimitNOFILE); idle files are closed, so this takes more files than the limit read at once`,
        );
      else this.reportError('read_error', `open: ${(e as Error).message}`);
      return false;
    }
  }

  private async finishOldFile(): Promise<void> {
    try {
      const st = await this.fh!.stat();
      // It may have been truncated (copytruncate) and regrown since our last poll, then rotated.
      if (st.size < this.offset || (this.offset > 0 && !(await this.markStillThere()))) await this.truncated();
      if (st.size > this.offset) await this.readTo(st.size);
    } catch {
      // ESTALE and friends: what was not read is not readable any more.
    }
    const grace = this.opts.rotateGraceMs ?? 0;
    if (grace > 0 && this.fh) {
      await this.endRetired();
      this.retired = { fh: this.fh, offset: this.offset, pending: this.pending, discarding: this.discarding, until: Date.now() + grace };
      this.fh = undefined;
      this.pending = undefined;
      await this.dropHandle();
      return;
    }
    if (this.pending && this.pending.length > 0) this.sink.error('partial_line_dropped', this.path);
    this.pending = undefined;
    await this.dropHandle();
  }

  // Reads what a late writer appended to the rotated-away file; closes it once its grace is over.
  private async readRetired(final = false): Promise<void> {
    const r = this.retired!;
    try {
      const st = await r.fh.stat();
      while (r.offset < st.size) {
        const len = Math.min(READ_CHUNK, st.size - r.offset);
        const buf = Buffer.allocUnsafe(len);
        const n = (await r.fh.read(buf, 0, len, r.offset)).bytesRead;
        if (n === 0) break;
        if (n >= HOLE_BYTES && allNul(buf, n)) {
          // A hole in a file already rotated away: not worth probing; give up on it.
          this.sink.error('sparse_skip', this.path);
          r.until = 0;
          break;
        }
        r.offset += n;
        this.sink.bytes(n);
        // The line splitter works on the tail's own state: lend it the old file's.
        const [pending, discarding] = [this.pending, this.discarding];
        [this.pending, this.discarding] = [r.pending, r.discarding];
        this.consume(buf, n);
        [r.pending, r.discarding] = [this.pending, this.discarding];
        [this.pending, this.discarding] = [pending, discarding];
      }
    } catch {
      r.until = 0; // unreadable now: give up on it
    }
    if (final || Date.now() >= r.until) await this.endRetired(false);
  }

  private async endRetired(readFirst = true): Promise<void> {
    if (readFirst && this.retired) return this.readRetired(true);
    const r = this.retired;
    if (!r) return;
    this.retired = undefined;
    if (r.pending && r.pending.length > 0) this.sink.error('partial_line_dropped', this.path);
    await closeQuietly(r.fh);
  }

  private async dropHandle(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    this.dev = -1;
    this.ino = -1;
    await closeQuietly(fh);
  }

  /**
   * The file was truncated under us (copytruncate, or truncate and regrow). What was appended
   * between our last read and the truncation is gone from it; copytruncate left it in a copy
   * beside the path. A sibling `<name>*` (logrotate: `<name>.1`, `<name>-YYYYMMDD`) at least as
   * long as our offset, holding our mark (the last bytes we read) at the same position, is that
   * copy: its bytes past our offset are read first (up to MAX_COPY_BYTES). Without one, the
   * possible loss is counted as copytruncate_lost.
   */
  private async truncated(): Promise<void> {
    if (this.offset > 0) await this.readFromCopy();
    if (this.pending && this.pending.length > 0) this.sink.error('partial_line_dropped', this.path);
    this.pending = undefined;
    this.discarding = false;
    this.offset = 0;
    this.mark = undefined;
  }

  private async readFromCopy(): Promise<void> {
    const mark = this.markEnd === this.offset ? this.mark : undefined;
    const at = this.offset;
    const copy =
      mark &&
      (await this.openSibling(
        (st) => st.size >= at && !(st.dev === this.dev && st.ino === this.ino),
        async (fh) => {
          const buf = Buffer.allocUnsafe(mark.length);
          const { bytesRead } = await fh.read(buf, 0, buf.length, at - mark.length);
          return bytesRead === buf.length && buf.equals(mark);
        },
      ));
    if (!copy) {
      this.sink.error('copytruncate_lost', `${this.path}: truncated, and no copy of it beside it holds what we read last`);
      return;
    }
    try {
      const end = Math.min((await copy.stat()).size, at + MAX_COPY_BYTES);
      for (let pos = at; pos < end;) {
        const len = Math.min(READ_CHUNK, end - pos);
        const buf = Buffer.allocUnsafe(len);
        const n = (await copy.read(buf, 0, len, pos)).bytesRead;
        if (n === 0 || (n >= HOLE_BYTES && allNul(buf, n))) break;
        pos += n;
        this.sink.bytes(n);
        this.consume(buf, n);
      }
      if ((await copy.stat()).size > end) this.sink.error('copytruncate_lost', `${this.path}: more than ${MAX_COPY_BYTES} bytes to recover from its copy`);
    } catch {
      this.sink.error('copytruncate_lost', this.path);
    } finally {
      await this.sink.settle?.(true);
      await closeQuietly(copy);
    }
  }

  // Compares the bytes we last consumed (ending at a newline) with what the file holds there now.
  private async markStillThere(): Promise<boolean> {
    if (!this.mark) return true;
    const at = this.markEnd - this.mark.length;
    const buf = Buffer.allocUnsafe(this.mark.length);
    const { bytesRead } = await this.fh!.read(buf, 0, buf.length, at); // a read error is not a truncation: it throws
    return bytesRead === buf.length && buf.equals(this.mark);
  }

  private async readStartupWindow(size: number): Promise<void> {
    let window = this.opts.startupBytes;
    for (;;) {
      const start = Math.max(0, size - window);
      this.sink.reset();
      this.pending = undefined;
      this.discarding = start > 0; // the first line in the window is probably cut: skip to a newline
      this.offset = start;
      this.mark = undefined;
      const seen = this.lines;
      await this.readTo(size);
      if (start === 0 || window >= this.opts.startupBytes * STARTUP_MAX_FACTOR) return;
      // No whole line in the window: the newest line is longer than it (and not over the cap).
      const noLine = this.lines === seen && window <= this.opts.maxLineBytes + 1;
      if (!noLine && !this.sink.wantsMoreHistory()) return;
      window *= 2;
    }
  }

  private async readTo(size: number): Promise<void> {
    this.sink.willRead?.(size - this.offset);
    let holes = 0;
    try {
      while (this.offset < size && this.fh) {
        const len = Math.min(READ_CHUNK, size - this.offset);
        const buf = Buffer.allocUnsafe(len);
        let n: number;
        try {
          n = (await this.fh.read(buf, 0, len, this.offset)).bytesRead;
          if (n >= HOLE_BYTES && allNul(buf, n)) {
            // A hole (truncate -s 1T): skip it by probing instead of reading terabytes of zeros.
            // One hole per read: a file of many holes waits for the next poll (bulkhead).
            if (holes++ > 0) return;
            await this.skipHole(this.offset + n, size);
            continue;
          }
        } catch (e) {
          await this.readFailed(e as Error);
          return;
        }
        if (n === 0) return;
        this.offset += n;
        this.remember(buf, n);
        this.sink.bytes(n);
        this.consume(buf, n);
        await this.sink.settle?.(false);
        // Between chunks of a big backlog, let scrapes and timers in: a sync read never yields.
        if (this.offset < size) await new Promise<void>((r) => setImmediate(r));
      }
    } finally {
      await this.sink.settle?.(true);
    }
  }

  /**
   * After a chunk of NUL bytes ending at `from`: finds the first HOLE_PROBE block at or after it
   * that holds data (galloping, then bisecting: ~60 small reads for a terabyte) and continues
   * there, or at `size` if none does. Assumes one hole followed by data (what truncate -s or a
   * crash leaves); data between two holes may be skipped too: counted as sparse_skip either way.
   */
  private async skipHole(from: number, size: number): Promise<void> {
    const fh = this.fh!;
    const probe = Buffer.allocUnsafe(HOLE_PROBE);
    const hasData = async (at: number) => {
      const len = Math.min(HOLE_PROBE, size - at);
      const n = (await fh.read(probe, 0, len, at)).bytesRead;
      return !allNul(probe, n);
    };
    let lo = from; // everything before lo is taken as NUL
    let hi = size; // data at hi (or the end)
    for (let step = HOLE_PROBE; lo < size; step *= 2) {
      const at = Math.min(from + step - HOLE_PROBE, size - 1);
      if (await hasData(at)) {
        hi = at;
        break;
      }
      lo = Math.min(size, at + HOLE_PROBE);
    }
    while (hi - lo > HOLE_PROBE) {
      const mid = lo + Math.floor((hi - lo) / 2 / HOLE_PROBE) * HOLE_PROBE;
      if (await hasData(mid)) hi = mid;
      else lo = mid + HOLE_PROBE;
    }
    // A line cut by the hole can never complete; what follows the hole starts a line (its
    // leading NULs are stripped by consume).
    if (this.pending && this.pending.length > 0) this.sink.error('partial_line_dropped', this.path);
    this.pending = undefined;
    this.discarding = false;
    this.mark = undefined;
    this.offset = Math.min(lo, size);
    this.sink.error('sparse_skip', `${this.path}: skipped a hole of NUL bytes up to offset ${this.offset}`);
  }

  // Counts the error and drops the handle; the next poll reopens and, if it is the same file,
  // continues here.
  private async readFailed(e: Error): Promise<void> {
    this.reportError('read_error', `read: ${e.message}`);
    await this.release(false);
  }

  // Closes the descriptor, remembering where we were: the next poll that finds the same file
  // changed reopens it (checked by dev+ino) and continues there. `idle`: released because nothing
  // happened (an unchanged file is then not even opened), not because of an error.
  private async release(idle: boolean): Promise<void> {
    this.resume = {
      dev: this.dev,
      ino: this.ino,
      birth: this.birth,
      offset: this.offset,
      mark: this.markEnd === this.offset ? this.mark : undefined,
      pending: this.pending,
      discarding: this.discarding,
    };
    this.parked = idle;
    this.idleCount = 0;
    this.pending = undefined;
    await this.dropHandle();
  }

  // Keeps the last TAIL_MARK_BYTES read, whatever they are (a partial line too): a file that
  // holds other bytes there now was truncated and regrown.
  private remember(chunk: Buffer, n: number): void {
    const prev = this.mark && this.markEnd === this.offset - n ? this.mark : undefined;
    const joined = prev && n < TAIL_MARK_BYTES ? Buffer.concat([prev, chunk.subarray(0, n)]) : chunk.subarray(0, n);
    this.mark = Buffer.from(joined.subarray(Math.max(0, joined.length - TAIL_MARK_BYTES)));
    this.markEnd = this.offset;
  }

  private consume(chunk: Buffer, n: number): void {
    let buf = chunk;
    let end = n;
    let pos = 0;
    if (this.pending) {
      buf = Buffer.concat([this.pending, chunk.subarray(0, n)]);
      end = buf.length;
      this.pending = undefined;
    }
    // NUL bytes are never part of a record: a run of them is a hole (truncate -s, the zeros a
    // crash leaves) that ends whatever line came before it. One scan per chunk finds them.
    let nul = nulIn(buf, pos, end);
    for (;;) {
      const nl = buf.indexOf(10, pos);
      const lineEnd = nl === -1 || nl >= end ? end : nl;
      if (nul !== -1 && nul < lineEnd) {
        // The line before the hole is cut: it can never complete.
        if (nul > pos && !this.discarding) this.sink.error('partial_line_dropped', this.path);
        this.discarding = false;
        while (nul < end && buf[nul] === 0) nul++;
        this.sink.error('sparse_skip', this.path);
        pos = nul;
        nul = nulIn(buf, pos, end);
        continue;
      }
      if (lineEnd === end) break;
      if (this.discarding) {
        this.discarding = false;
      } else if (nl - pos > this.opts.maxLineBytes) {
        this.lines++;
        this.sink.error('line_too_long', this.path);
      } else {
        this.lines++;
        this.sink.line(buf, pos, nl);
      }
      pos = nl + 1;
    }
    if (pos < end) {
      const rest = end - pos;
      if (this.discarding) return; // still inside an over-long (or cut) line: nothing to keep
      if (rest > this.opts.maxLineBytes) {
        this.sink.error('line_too_long', this.path);
        this.discarding = true;
        return;
      }
      this.pending = Buffer.from(buf.subarray(pos, end));
    }
  }

  private reportError(reason: TailErrorReason, detail: string): void {
    // One count per distinct failure, not one per poll, so a stuck EACCES does not flood.
    if (this.lastError === detail) return;
    this.lastError = detail;
    this.sink.error(reason, detail);
  }

  // Something other than a regular file at the path: never read (a FIFO would block, a device
  // has no end), counted once while it stays.
  private refuse(st: Stats | undefined): void {
    const kind = !st || st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'FIFO' : st.isDirectory() ? 'directory' : st.isSocket() ? 'socket' : 'device';
    this.reportError('not_regular_file', `${this.path} is a ${kind}, not a regular file: not read. Fix: replace it with the trainer's own (regular) file`);
  }
}
