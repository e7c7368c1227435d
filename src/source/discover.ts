// Which files of a run directory trainwatch reads, and which directories are runs.
import { isUtf8 } from 'node:buffer';
import { readdirSync } from 'node:fs';
import { readdir, realpath, stat } from 'node:fs/promises';
import { basename, join, relative, resolve, sep } from 'node:path';

/** `heartbeat_rank<N>.jsonl`, or the older single `heartbeat.jsonl` (rank from the records). */
export const HEARTBEAT_FILE = /^heartbeat(?:_rank(\d+))?\.jsonl$/;
/** The rank-0 CSV log, the original watchdog's throughput source. */
export const CSV_FILE = 'training.csv';

/** What a file in a run directory is to trainwatch. */
export type FileRole = 'heartbeat' | 'csv' | undefined;

/** Classifies a file name; `.gz` rotations and everything else are ignored. */
export function roleOf(name: string): FileRole {
  if (HEARTBEAT_FILE.test(name)) return 'heartbeat';
  if (name === CSV_FILE) return 'csv';
  return undefined;
}

/** A run directory and its label. */
export interface RunLocation {
  name: string;
  dir: string;
  /** realpath of dir; several names for one directory are watched once */
  real: string;
  /** the directory's inode when discovered: a re-created directory has a new one */
  ino: number;
}

/** The files of a run that trainwatch tails (names only). ENOENT gives undefined: the run is gone; out of descriptors throws DiscoveryRetry. */
export async function listRunFiles(dir: string): Promise<string[] | undefined> {
  try {
    return runFilesOf(await readdir(dir));
  } catch (e) {
    return goneOrThrow(e);
  }
}

/** listRunFiles with a direct system call: on a local disk far cheaper than a thread-pool round trip. */
export function listRunFilesSync(dir: string): string[] | undefined {
  try {
    return runFilesOf(readdirSync(dir));
  } catch (e) {
    return goneOrThrow(e);
  }
}

const runFilesOf = (names: string[]) => names.filter((n) => roleOf(n) !== undefined);

function goneOrThrow(e: unknown): undefined {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
  throw retryable(e) ?? e;
}

/**
 * Discovery could not tell what exists because the process (EMFILE) or the system (ENFILE) is
 * out of file descriptors. That says nothing about the directory: the caller keeps the runs
 * and files it knows and retries later, and never takes it for "gone".
 */
export class DiscoveryRetry extends Error {
  constructor(
    readonly path: string,
    readonly code: string,
    message: string,
  ) {
    super(`${message}. Fix: raise the open-files limit (ulimit -n, systemd LimitNOFILE); retrying`);
    this.name = 'DiscoveryRetry';
  }
}

/** A DiscoveryRetry for an out-of-descriptors error, else undefined. */
function retryable(e: unknown, path = (e as NodeJS.ErrnoException).path ?? ''): DiscoveryRetry | undefined {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'EMFILE' || code === 'ENFILE' ? new DiscoveryRetry(path, code, (e as Error).message) : undefined;
}

/** One root's listing, reused while the root's entries have not changed. */
interface RootListing {
  ino: number;
  mtimeMs: number;
  ctimeMs: number;
  /** every run directory the listing resolved, before de-duplication across roots */
  locs: RunLocation[];
  /** what went wrong with its entries (replayed on reuse, so a lasting problem stays reported) */
  errors: Array<[string, Error]>;
}

/**
 * A listing is reused only if the root's last change is at least this much older than the
 * listing: a change in the same timestamp tick as an earlier one (coarse or 1 s timestamps)
 * would not move the mtime.
 */
const SETTLED_MS = 2000;

/**
 * Remembers each root's listing. A directory's mtime and ctime move whenever an entry is added,
 * removed or renamed in it, so an unchanged root needs one stat, not a readdir and a realpath
 * and stat of every entry. What the mtime cannot show (a symlinked run's target deleted
 * elsewhere) is the caller's to notice; it then calls clear().
 */
export class DiscoveryCache {
  readonly roots = new Map<string, RootListing>();

  /** Forgets every listing: the next discovery lists each root again. */
  clear(): void {
    this.roots.clear();
  }
}

/** A root entry or --dir resolved to a run location; undefined when it is not a (live) directory. */
async function resolveRun(name: string, dir: string, onError: (path: string, err: Error) => void, rootReal?: string): Promise<RunLocation | undefined> {
  let real: string;
  let ino: number;
  try {
    real = await realpath(dir);
    const st = await stat(real);
    if (!st.isDirectory()) return undefined;
    ino = st.ino;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const retry = retryable(e, dir);
    if (retry) throw retry;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') onError(dir, e as Error);
    return undefined;
  }
  if (rootReal !== undefined && (rootReal === real || rootReal.startsWith(real.endsWith(sep) ? real : real + sep))) {
    onError(dir, new Error(`symlink loop: it leads to ${real}, which holds the root itself; not a run`));
    return undefined;
  }
  return { name, dir: resolve(dir), real, ino };
}

/**
 * A run directory whose name is not valid UTF-8. Every path in trainwatch (run labels, file
 * events, control files) is a string, which cannot hold such a name: the run is refused, and
 * reported (its name percent-escaped) instead of silently not watched.
 */
export class RunNameNotUtf8 extends Error {
  constructor(readonly escaped: string) {
    super(`run directory name is not valid UTF-8 (shown escaped: ${escaped}); not watched. Fix: rename it to a UTF-8 name`);
    this.name = 'RunNameNotUtf8';
  }
}

/** A file name's bytes with '%', control bytes and every byte >= 0x80 as %XX: lossless, printable. */
export function escapeName(name: Buffer): string {
  let out = '';
  for (const b of name) out += b === 0x25 || b < 0x20 || b >= 0x7f ? `%${b.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(b);
  return out;
}

/** Lists one root: each immediate sub-directory (or symlink to one) is a run. */
async function listRoot(root: string, onError: (path: string, err: Error) => void): Promise<RunLocation[]> {
  let entries;
  let rootReal: string;
  try {
    rootReal = await realpath(root);
    // Names as bytes: a name that is not UTF-8 would come back with U+FFFD in it, a path that
    // does not exist, and the run would be skipped without a word.
    entries = await readdir(root, { withFileTypes: true, encoding: 'buffer' });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const retry = retryable(e, root);
    if (retry) throw retry; // an empty listing would drop every run under the root
    if (code !== 'ENOENT') onError(root, e as Error);
    return [];
  }
  const out: RunLocation[] = [];
  for (const ent of entries) {
    if (!ent.isDirectory() && !ent.isSymbolicLink()) continue;
    if (ent.name[0] === 0x2e) continue; // '.'
    if (!isUtf8(ent.name)) {
      const err = new RunNameNotUtf8(escapeName(ent.name));
      onError(join(root, err.escaped), err);
      continue;
    }
    const dir = join(root, ent.name.toString());
    const loc = await resolveRun(relative(resolve(root), resolve(dir)), dir, onError, rootReal);
    if (loc) out.push(loc);
  }
  return out;
}

/** A root's listing, from the cache while the root has not changed since. */
async function rootRuns(root: string, onError: (path: string, err: Error) => void, cache: DiscoveryCache | undefined): Promise<RunLocation[]> {
  if (!cache) return listRoot(root, onError);
  let st;
  try {
    st = await stat(root);
  } catch {
    cache.roots.delete(root);
    return listRoot(root, onError); // reports the problem, if it is one
  }
  const hit = cache.roots.get(root);
  if (hit && hit.ino === st.ino && hit.mtimeMs === st.mtimeMs && hit.ctimeMs === st.ctimeMs) {
    for (const [path, err] of hit.errors) onError(path, err);
    return hit.locs;
  }
  const listedAt = Date.now();
  const errors: Array<[string, Error]> = [];
  const locs = await listRoot(root, (path, err) => {
    errors.push([path, err]);
    onError(path, err);
  });
  if (listedAt - st.mtimeMs >= SETTLED_MS && listedAt - st.ctimeMs >= SETTLED_MS)
    cache.roots.set(root, { ino: st.ino, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, locs, errors });
  else cache.roots.delete(root);
  return locs;
}

/**
 * The runs to watch: each --dir (named by its base name) and each immediate sub-directory of
 * each --root (named by its path relative to the root). Symlinked directories are followed
 * once; realpath de-duplication means a symlink loop cannot make a run appear twice, and an
 * entry that resolves to its root or to a parent of it (root/a -> root) is a loop, not a run.
 * With a cache, a root whose entries have not changed is not listed again. Out of file
 * descriptors (EMFILE, ENFILE) throws DiscoveryRetry: the runs known so far are still there.
 */
export async function discoverRuns(
  dirs: readonly string[],
  roots: readonly string[],
  onError: (path: string, err: Error) => void,
  cache?: DiscoveryCache,
): Promise<RunLocation[]> {
  const out: RunLocation[] = [];
  const seen = new Set<string>();
  const add = (loc: RunLocation | undefined) => {
    if (!loc || seen.has(loc.real)) return;
    seen.add(loc.real);
    out.push(loc);
  };
  for (const d of dirs) add(await resolveRun(basename(resolve(d)), d, onError));
  for (const root of roots) for (const loc of await rootRuns(root, onError, cache)) add(loc);
  return out;
}
