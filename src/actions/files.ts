// Control-file writes and reads in a run directory: atomic, symlink-safe, confined, non-blocking.
//
// Confinement: every operation first opens the run directory itself (O_DIRECTORY|O_NOFOLLOW)
// and verifies the handle: the directory the kernel holds must be the run's realpath from
// discovery (readlink of /proc/self/fd/N), so a run dir already swapped for a symlink, or one
// reached through a swapped parent, is refused (ConfinementError). Names are then resolved
// through that handle: Node has no openat/renameat/linkat, but on Linux `/proc/self/fd/N/name`
// resolves `name` inside the open directory whatever its path now leads to. A directory renamed
// or exchanged for a symlink mid-operation (a rename-exchange loop) therefore gets every temp
// file, rename, link and unlink of that operation, and nothing lands outside. Where /proc is
// absent, the path is checked (realpath) before each operation instead, which leaves a window.
// Non-blocking: every file under a run directory is opened O_NONBLOCK|O_NOFOLLOW and fstat'ed
// through the handle before use, so a FIFO planted there never parks a thread-pool thread, a
// symlink is never followed (ELOOP), and anything but a regular file is refused.
// Atomicity: content goes to a fresh temp file in the same directory (O_CREAT|O_EXCL), is
// fsynced, then renamed over the target. rename() replaces a symlink at the target rather than
// following it. For `.HALT`, which must never overwrite a halt that is there, link() is used
// instead of rename(): it fails with EEXIST if anything is already there; only a regular file
// counts as a halt, anything else (a symlink, dangling or not, a FIFO) is replaced. On a full disk
// (ENOSPC, EDQUOT) .HALT is staged empty: the trainer only tests that it exists. Every failure
// path removes its temp file.
// The audit log is appended through a handle kept open (see AppendLog): two calls per append
// instead of five, which is most of the webhook's latency at saturation. It rotates at a size
// given by the caller, starting the new file with a head line the caller supplies (see audit.ts).
import { constants, existsSync } from 'node:fs';
import { link, lstat, open, readlink, realpath, rename, unlink, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';

/** A write refused before touching the disk; retrying will not help. */
export class ConfinementError extends Error {}

/** A file under a run directory that is not a regular file (a FIFO, a directory, a device): refused. */
export class NotRegularError extends Error {
  /** errno-like code, for the callers' error texts */
  readonly code = 'ENOTREG';
}

/** The control files trainwatch writes, relative to a run directory. */
export const CONTROL_FILES = {
  anomalyType: '.anomaly_type',
  halt: '.HALT',
  details: '.anomaly.json',
  audit: '.trainwatch-audit.jsonl',
  /** read, never written: the profile a run directory names (run.profile-file) */
  profile: '.trainwatch-profile',
} as const;

/** Flags for opening a file under a run directory: never follow a symlink, never wait for a FIFO's peer. */
export const SAFE_OPEN = constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** What `Staged.createExclusive` did: created (with or without content), replaced a non-regular file, or found a regular file. */
export type ExclusiveResult = 'ok' | 'ok_empty' | 'replaced_non_regular' | 'exists';

// Whether /proc/self/fd/N resolves to the open file here (Linux with /proc mounted). Checked
// once; /proc is not under any run directory, so this sync stat cannot be made to block.
let procFd: boolean | undefined;
const hasProcFd = () => (procFd ??= existsSync('/proc/self/fd'));

/** Whether an error says the disk (or the user's quota) is full. */
export const diskFull = (e: unknown) => ['ENOSPC', 'EDQUOT'].includes((e as NodeJS.ErrnoException).code ?? '');

/**
 * A run directory opened once and verified to be the run's realpath; `path(name)` names a file
 * in it through the open handle (see the header). Close it only after every use of its paths:
 * a closed descriptor number can be reused by an unrelated open.
 */
export class RunDir {
  private constructor(
    readonly real: string,
    private readonly fh: FileHandle | undefined,
  ) {}

  /** Opens `real` (the run `dir` as discovery resolved it) and verifies it; ConfinementError if it moved. */
  static async open(dir: string, real: string): Promise<RunDir> {
    const now = await realpath(dir);
    if (now !== real) throw new ConfinementError(`run directory ${dir} now resolves to ${now}, not ${real}; refusing to write`);
    if (!hasProcFd()) return new RunDir(real, undefined);
    let fh: FileHandle;
    try {
      fh = await open(real, constants.O_RDONLY | constants.O_DIRECTORY | SAFE_OPEN);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ELOOP' || code === 'ENOTDIR') throw new ConfinementError(`run directory ${real} is no longer a directory (${code}); refusing to write`);
      throw e;
    }
    try {
      // The kernel's own name for the directory held: a parent swapped for a symlink shows here.
      const held = await readlink(`/proc/self/fd/${fh.fd}`);
      if (held !== real) throw new ConfinementError(`run directory ${real} is now reached as ${held}; refusing to write`);
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw e;
    }
    return new RunDir(real, fh);
  }

  /** A path that names `name` in this directory, whatever the directory's path leads to now. */
  path(name: string): string {
    return this.fh ? `/proc/self/fd/${this.fh.fd}/${name}` : join(this.real, name);
  }

  /** fsyncs the directory, so that a rename or link in it survives a crash. */
  async sync(): Promise<void> {
    try {
      if (this.fh) await this.fh.sync();
      else {
        const fh = await open(this.real, constants.O_RDONLY | constants.O_DIRECTORY | SAFE_OPEN);
        await fh.sync().finally(() => fh.close());
      }
    } catch {
      // Some filesystems refuse fsync on directories; the rename is still atomic.
    }
  }

  /** Releases the directory handle. */
  async close(): Promise<void> {
    await this.fh?.close().catch(() => undefined);
  }
}

/** Runs `fn` with the run directory open and verified, and closes it after. */
export async function withRunDir<T>(dir: string, real: string, fn: (d: RunDir) => Promise<T>): Promise<T> {
  const d = await RunDir.open(dir, real);
  try {
    return await fn(d);
  } finally {
    await d.close();
  }
}

/**
 * Opens `name` in `d` with `flags` plus O_NOFOLLOW|O_NONBLOCK and checks that it is a regular
 * file; returns the handle and its stat. ENOENT and ELOOP (a symlink) pass through as errors.
 */
export async function openRegular(d: RunDir, name: string, flags: number, mode = 0o644) {
  const fh = await open(d.path(name), flags | SAFE_OPEN, mode);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new NotRegularError(`${join(d.real, name)} is not a regular file (a FIFO, directory or device planted there?); move it away`);
    return { fh, st };
  } catch (e) {
    await fh.close().catch(() => undefined);
    throw e;
  }
}

const tempName = (name: string) => `.${name.replace(/^\./, '')}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;

// Writes `content` to a fresh temp file in `d` and fsyncs it; returns its name and whether it was
// left empty (only with `emptyOnFull`, when the disk was full). The temp file is removed on failure.
async function writeTemp(d: RunDir, name: string, content: string, emptyOnFull = false): Promise<{ tmp: string; empty: boolean }> {
  const tmp = tempName(name);
  const fh = await open(d.path(tmp), constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | SAFE_OPEN, 0o644);
  let empty = false;
  try {
    try {
      await fh.writeFile(content);
    } catch (e) {
      if (!emptyOnFull || !diskFull(e)) throw e;
      // Creating a file needs no data block; the trainer only tests that .HALT exists.
      await fh.truncate(0);
      empty = true;
    }
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(d.path(tmp)).catch(() => undefined);
    throw e;
  }
  // The content is durable: putting it in place need not wait for the close.
  void fh.close().catch(() => undefined);
  return { tmp, empty };
}

/** A control file's content, durable in a temp file beside it, not yet in place; holds the run directory open until used. */
export class Staged {
  constructor(
    private readonly d: RunDir,
    private readonly name: string,
    private readonly tmp: string,
    /** the disk was full: staged empty */
    readonly empty: boolean,
  ) {}

  /** Atomically replaces the file with the staged content. */
  async replace(): Promise<void> {
    try {
      await rename(this.d.path(this.tmp), this.d.path(this.name));
      await this.d.sync();
    } catch (e) {
      await unlink(this.d.path(this.tmp)).catch(() => undefined);
      throw e;
    } finally {
      await this.d.close();
    }
  }

  /**
   * Puts the staged content in place unless a regular file is there already ('exists'). A
   * non-regular file under the name (a symlink, dangling or not, a FIFO, a socket) is not a halt
   * the trainer can rely on: it is replaced atomically ('replaced_non_regular'). A directory is
   * not removed: that fails with the fix, and the caller retries.
   */
  async createExclusive(): Promise<ExclusiveResult> {
    const tmp = this.d.path(this.tmp);
    const target = this.d.path(this.name);
    try {
      try {
        await link(tmp, target);
        return this.empty ? 'ok_empty' : 'ok';
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const st = await lstat(target).catch(() => undefined);
      if (st?.isFile()) return 'exists';
      if (st?.isDirectory())
        throw Object.assign(new Error(`${join(this.d.real, this.name)} is a directory: remove it (rmdir) so that trainwatch can create the file`), {
          code: 'EISDIR',
        });
      // rename() replaces the entry itself, never what a symlink points at.
      await rename(tmp, target);
      return st ? 'replaced_non_regular' : this.empty ? 'ok_empty' : 'ok';
    } finally {
      // Only the link has to be durable; the temp name's removal may be lost in a crash.
      await Promise.all([unlink(tmp).catch(() => undefined), this.d.sync()]);
      await this.d.close();
    }
  }
}

/**
 * Stages `content` for `dir/name` (confined like every write), to be put in place later. With
 * `emptyOnFull`, a full disk stages an empty file instead of failing (for .HALT).
 */
export async function stage(dir: string, real: string, name: string, content: string, emptyOnFull = false): Promise<Staged> {
  const d = await RunDir.open(dir, real);
  try {
    const { tmp, empty } = await writeTemp(d, name, content, emptyOnFull);
    return new Staged(d, name, tmp, empty);
  } catch (e) {
    await d.close();
    throw e;
  }
}

/** Atomically replaces `dir/name` with `content`. */
export async function writeAtomic(dir: string, real: string, name: string, content: string): Promise<void> {
  await (await stage(dir, real, name, content)).replace();
}

/**
 * Whether `real/name` is a regular file (not a symlink, FIFO or device) holding exactly
 * `content` and last modified at or after `sinceMs`.
 */
export async function holdsSince(real: string, name: string, content: string, sinceMs: number): Promise<boolean> {
  const want = Buffer.from(content);
  return withRunDir(real, real, async (d) => {
    const { fh, st } = await openRegular(d, name, constants.O_RDONLY);
    try {
      if (st.size !== want.length || st.mtimeMs < sinceMs) return false;
      const got = Buffer.alloc(want.length);
      const { bytesRead } = await fh.read(got, 0, got.length, 0);
      return bytesRead === want.length && got.equals(want);
    } finally {
      await fh.close().catch(() => undefined);
    }
  }).catch(() => false); // gone, a symlink (ELOOP), not regular, unreadable: not evidence of anything
}

/** How an append log rotates: an append that would take it past `maxBytes` first moves it to `<name>.1` (one kept) and starts a new file with `head()`. */
export interface Rotation {
  maxBytes: number;
  /** the first line of the new file (the caller's checkpoint of what the old one said), made at rotation time */
  head: () => string;
  /** told of each rotation: no argument if it worked, else its error (the append then goes to the old file) */
  done?: (err?: Error) => void;
}

interface OpenLog {
  fh?: FileHandle;
  /** identity of the file the handle was opened on; the name must still lead to it */
  dev: number;
  ino: number;
  /** the file's size: fstat at open plus what this process appended since */
  size: number;
  /** after a failed rotation, the size at which to try again */
  rotateAt: number;
  /** when the handle was last used (ms), for closing idle handles */
  used: number;
  /** appends and closes of this path, one after the other */
  queue: Promise<unknown>;
  busy: number;
}

/**
 * Appends lines to files in run directories (the audit logs) through handles kept open between
 * appends, each line written and fdatasynced.
 *
 * - Confinement: a handle is opened through a verified handle on the run directory (RunDir),
 *   O_NOFOLLOW|O_NONBLOCK, and kept only if it is a regular file. Writes through it land in that
 *   file even if the directory is later swapped for a symlink.
 * - Before each append the name is checked (lstat) to still lead to the handle's file: a log
 *   deleted or rotated (renamed away) meanwhile is re-opened, that is re-created, and the
 *   re-open verifies the directory again (a swapped directory is refused there).
 * - With a Rotation, an append that would take the file past its size rotates it first: the
 *   current file is hard-linked as `<name>.1` (replacing the previous one), then a temp file
 *   holding the head line is renamed over the name. At every instant the name holds the old
 *   generation or the new one, so a crash mid-rotation loses nothing.
 * - Appends to one file are serialised; a handle unused for `idleMs` is closed, so runs that
 *   went quiet hold no descriptor and a rotated-away log is not kept alive.
 */
export class AppendLog {
  private readonly logs = new Map<string, OpenLog>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly idleMs = 60_000) {}

  /** Appends `text` (one or more lines; a final newline is added if missing) to `dir/name`. */
  append(dir: string, real: string, name: string, text: string, rotation?: Rotation): Promise<void> {
    const path = join(real, name);
    let log = this.logs.get(path);
    if (!log) {
      log = { dev: 0, ino: 0, size: 0, rotateAt: 0, used: 0, queue: Promise.resolve(), busy: 0 };
      this.logs.set(path, log);
    }
    const l = log;
    l.busy++;
    const done = l.queue
      .then(() => this.write(l, dir, real, name, text.endsWith('\n') ? text : text + '\n', rotation))
      .finally(() => {
        l.busy--;
        l.used = Date.now();
      });
    l.queue = done.catch(() => undefined);
    return done;
  }

  /** Closes the handles of files directly in `real` (a run no longer watched). */
  closeDir(real: string): Promise<void> {
    return this.closeWhere((path) => dirname(path) === real);
  }

  /** Closes every handle (on stop). */
  async close(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.closeWhere(() => true);
  }

  /** How many handles are open (for tests). */
  get openHandles(): number {
    let n = 0;
    for (const l of this.logs.values()) if (l.fh) n++;
    return n;
  }

  private async write(l: OpenLog, dir: string, real: string, name: string, text: string, rotation: Rotation | undefined): Promise<void> {
    if (l.fh) {
      const st = await lstat(join(real, name)).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return undefined;
        throw e;
      });
      if (!st || st.ino !== l.ino || st.dev !== l.dev) await this.drop(l);
    }
    if (!l.fh) await this.reopen(l, dir, real, name);
    const buf = Buffer.from(text);
    if (rotation && l.size > 0 && l.size + buf.length > rotation.maxBytes && l.size >= l.rotateAt) {
      try {
        await this.rotate(l, dir, real, name, rotation.head());
        rotation.done?.();
      } catch (e) {
        // Not retried at every append: a directory at `.1`, say, would cost a rename each time.
        l.rotateAt = l.size + Math.ceil(rotation.maxBytes / 4);
        rotation.done?.(e as Error);
        if (!l.fh) await this.reopen(l, dir, real, name);
      }
    }
    try {
      for (let off = 0; off < buf.length;) off += (await l.fh!.write(buf, off, buf.length - off)).bytesWritten;
      await l.fh!.datasync();
      l.size += buf.length;
    } catch (e) {
      // A handle that failed once (EIO, ENOSPC) is not trusted: the next append re-opens.
      await this.drop(l);
      throw e;
    }
  }

  private async reopen(l: OpenLog, dir: string, real: string, name: string): Promise<void> {
    const { fh, st } = await withRunDir(dir, real, (d) => openRegular(d, name, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT));
    l.dev = st.dev;
    l.ino = st.ino;
    l.size = st.size;
    l.rotateAt = 0;
    l.fh = fh;
    this.timer ??= setInterval(() => this.closeIdle(), Math.max(1000, this.idleMs / 2)).unref();
  }

  private async rotate(l: OpenLog, dir: string, real: string, name: string, head: string): Promise<void> {
    await withRunDir(dir, real, async (d) => {
      const { tmp } = await writeTemp(d, name, head.endsWith('\n') ? head : head + '\n');
      const keep = tempName(`${name}.1`);
      try {
        const st = await lstat(d.path(name));
        if (st.dev !== l.dev || st.ino !== l.ino) throw new Error(`${join(real, name)} was replaced while open; not rotated`);
        await link(d.path(name), d.path(keep));
        await rename(d.path(keep), d.path(`${name}.1`));
        await rename(d.path(tmp), d.path(name));
      } catch (e) {
        await Promise.all([unlink(d.path(tmp)).catch(() => undefined), unlink(d.path(keep)).catch(() => undefined)]);
        throw e;
      }
      await d.sync();
    });
    await this.drop(l);
    await this.reopen(l, dir, real, name);
  }

  private async drop(l: OpenLog): Promise<void> {
    const fh = l.fh;
    l.fh = undefined;
    await fh?.close().catch(() => undefined);
  }

  private closeIdle(): void {
    const before = Date.now() - this.idleMs;
    void this.closeWhere((_path, l) => l.busy === 0 && l.used < before);
  }

  private async closeWhere(pick: (path: string, l: OpenLog) => boolean): Promise<void> {
    const closing: Promise<unknown>[] = [];
    for (const [path, l] of this.logs) {
      if (!pick(path, l)) continue;
      // Queued behind the appends in flight, so none of them loses its handle halfway.
      l.queue = l.queue.then(() => this.drop(l));
      closing.push(l.queue);
      if (l.busy === 0) this.logs.delete(path);
    }
    if (this.logs.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
    await Promise.all(closing);
  }
}

/** Removes `name` if it is a regular file holding exactly `content` (what we wrote); false if it holds anything else or is gone. */
export async function removeIfHolds(real: string, name: string, content: string): Promise<boolean> {
  if (!(await holdsSince(real, name, content, 0))) return false;
  return withRunDir(real, real, async (d) => {
    try {
      await unlink(d.path(name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
    await d.sync();
    return true;
  });
}
