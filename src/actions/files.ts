// Control-file writes into a run directory: atomic, symlink-safe, confined.
//
// Atomicity: content goes to a fresh temp file in the same directory, opened O_CREAT|O_EXCL|
// O_NOFOLLOW (so a symlink planted at the temp path is never followed), is fsynced, then
// renamed over the target. rename() replaces a symlink at the target rather than following
// it. For `.HALT`, which must never be overwritten, link() is used instead of rename(): it
// fails with EEXIST if anything (file, symlink, dangling symlink) is already there.
// Confinement: the caller passes the run's realpath from discovery; if the directory now
// resolves elsewhere (replaced by a symlink), nothing is written.
import { constants } from 'node:fs';
import { link, open, realpath, rename, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

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
  } finally {
    await fh.close();
  }
  return tmp;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic.
  } finally {
    await fh.close();
  }
}

/** Atomically replaces `dir/name` with `content`. */
export async function writeAtomic(dir: string, real: string, name: string, content: string): Promise<void> {
  await confirmDir(dir, real);
  const tmp = await writeTemp(real, name, content);
  try {
    await rename(tmp, join(real, name));
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await syncDir(real);
}

/** Atomically creates `dir/name` unless something is there already. Returns false if it existed. */
export async function createExclusive(dir: string, real: string, name: string, content: string): Promise<boolean> {
  await confirmDir(dir, real);
  const tmp = await writeTemp(real, name, content);
  try {
    await link(tmp, join(real, name));
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    await unlink(tmp).catch(() => undefined);
    await syncDir(real).catch(() => undefined);
  }
}

/** Appends one line to `dir/name`, refusing to follow a symlink there, and fsyncs it. */
export async function appendLine(dir: string, real: string, name: string, line: string): Promise<void> {
  await confirmDir(dir, real);
  const fh = await open(join(real, name), constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o644);
  try {
    await fh.appendFile(line.endsWith('\n') ? line : line + '\n');
    await fh.sync();
  } finally {
    await fh.close();
  }
}

