// Control-file writes into a run directory: atomic, symlink-safe, confined.
//
// Atomicity: content goes to a fresh temp file in the same directory, opened O_CREAT|O_EXCL|
// O_NOFOLLOW (so a symlink planted at the temp path is never followed), is fsynced, then
// renamed over the target. rename() replaces a symlink at the target rather than following
// it. For `.HALT`, which must never be overwritten, link() is used instead of rename(): it
// fails with EEXIST if anything (file, symlink, dangling symlink) is already there.
// Confinement: the caller passes the run's realpath from discovery; if the directory now
// resolves elsewhere (replaced by a symlink), nothing is written.
// The audit log is appended through a handle kept open (see AppendLog): two calls per append
// instead of five, which is most of the webhook's latency at saturation.
import { constants } from 'node:fs';
import { link, lstat, open, realpath, rename, unlink, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';

/** A write refused before touching the disk; retrying will not help. */
export class ConfinementError extends Error {}

/** The control files trainwatch writes, relative to a run directory. */
export const CONTROL_FILES = {
  anomalyType: '.anomaly_type',
  halt: '.HALT',
  details: '.anomaly.json',
  audit: '.trainwatch-audit.jsonl',
} as const;

async function confirmDir(dir: string, expectedReal: string): Promise<void> {
  const real = await realpath(dir);
  if (real !== expectedReal) throw new ConfinementError(`run directory ${dir} now resolves to ${real}, not ${expectedReal}; refusing to write`);
}

async function writeTemp(dir: string, name: string, content: string): Promise<string> {
  const tmp = join(dir, `.${name.replace(/^\./, '')}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  try {
    await fh.writeFile(content);
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  // The content is durable: putting it in place need not wait for the close.
  void fh.close().catch(() => undefined);
  return tmp;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic.
  }
  void fh.close().catch(() => undefined);
}

/** A control file's content, durable in a temp file beside it, not yet in place. */
export class Staged {
  constructor(
    private readonly real: string,
    private readonly name: string,
    private readonly tmp: string,
  ) {}

  /** Atomically replaces the file with the staged content. */
  async replace(): Promise<void> {
    try {
      await rename(this.tmp, join(this.real, this.name));
    } catch (e) {
      await unlink(this.tmp).catch(() => undefined);
      throw e;
    }
    await syncDir(this.real);
  }

  /** Puts the staged content in place unless something is there already; false if it was. */
  async createExclusive(): Promise<boolean> {
    try {
      await link(this.tmp, join(this.real, this.name));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw e;
    } finally {
      // Only the link has to be durable; the temp name's removal may be lost in a crash.
      await Promise.all([unlink(this.tmp).catch(() => undefined), syncDir(this.real).catch(() => undefined)]);
    }
  }
}

/** Stages `content` for `dir/name` (confined like every write), to be put in place later. */
export async function stage(dir: string, real: string, name: string, content: string): Promise<Staged> {
  await confirmDir(dir, real);
  return new Staged(real, name, await writeTemp(real, name, content));
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
  let fh: FileHandle;
  try {
    // O_NONBLOCK: a FIFO planted there must not park a thread-pool thread until a writer comes.
    fh = await open(join(real, name), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return false; // gone, a symlink (ELOOP), unreadable: not evidence of anything
  }
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size !== want.length || st.mtimeMs < sinceMs) return false;
    const got = Buffer.alloc(want.length);
    const { bytesRead } = await fh.read(got, 0, got.length, 0);
    return bytesRead === want.length && got.equals(want);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

interface OpenLog {
  fh?: FileHandle;
  /** identity of the file the handle was opened on; the name must still lead to it */
  dev: number;
  ino: number;
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
 * - Confinement: a handle is opened only after the run directory was confirmed to still resolve
 *   to its realpath, and with O_NOFOLLOW, so a symlink at the log's name is never followed.
 *   Writes through it land in that file even if the directory is later swapped for a symlink.
 * - Before each append the name is checked (lstat) to still lead to the handle's file: a log
 *   deleted or rotated (renamed away) meanwhile is re-opened, that is re-created, and the
 *   re-open confirms the directory again (a swapped directory is refused there).
 * - Appends to one file are serialised; a handle unused for `idleMs` is closed, so runs that
 *   went quiet hold no descriptor and a rotated-away log is not kept alive.
 */
export class AppendLog {
  private readonly logs = new Map<string, OpenLog>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly idleMs = 60_000) {}

  /** Appends `text` (one or more lines; a final newline is added if missing) to `dir/name`. */
  append(dir: string, real: string, name: string, text: string): Promise<void> {
    const path = join(real, name);
    let log = this.logs.get(path);
    if (!log) {
      log = { dev: 0, ino: 0, used: 0, queue: Promise.resolve(), busy: 0 };
      this.logs.set(path, log);
    }
    const l = log;
    l.busy++;
    const done = l.queue.then(() => this.write(l, dir, real, path, text.endsWith('\n') ? text : text + '\n')).finally(() => {
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

  private async write(l: OpenLog, dir: string, real: string, path: string, text: string): Promise<void> {
    if (l.fh) {
      const st = await lstat(path).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return undefined;
        throw e;
      });
      if (!st || st.ino !== l.ino || st.dev !== l.dev) await this.drop(l);
    }
    if (!l.fh) {
      await confirmDir(dir, real);
      const fh = await open(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o644);
      try {
        const st = await fh.stat();
        l.dev = st.dev;
        l.ino = st.ino;
      } catch (e) {
        await fh.close().catch(() => undefined);
        throw e;
      }
      l.fh = fh;
      this.timer ??= setInterval(() => this.closeIdle(), Math.max(1000, this.idleMs / 2)).unref();
    }
    try {
      const buf = Buffer.from(text);
      for (let off = 0; off < buf.length; ) off += (await l.fh.write(buf, off, buf.length - off)).bytesWritten;
      await l.fh.datasync();
    } catch (e) {
      // A handle that failed once (EIO, ENOSPC) is not trusted: the next append re-opens.
      await this.drop(l);
      throw e;
    }
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
  try {
    await unlink(join(real, name));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
  await syncDir(real).catch(() => undefined);
  return true;
}
