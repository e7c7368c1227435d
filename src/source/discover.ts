// Which files of a run directory trainwatch reads, and which directories are runs.
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

/** The files of a run that trainwatch tails (names only). ENOENT gives undefined: the run is gone. */
export async function listRunFiles(dir: string): Promise<string[] | undefined> {
  try {
    const names = await readdir(dir);
    return names.filter((n) => roleOf(n) !== undefined);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw e;
  }
}

/**
 * The runs to watch: each --dir (named by its base name) and each immediate sub-directory of
 * each --root (named by its path relative to the root). Symlinked directories are followed
 * once; realpath de-duplication means a symlink loop cannot make a run appear twice, and an
 * entry that resolves to its root or to a parent of it (root/a -> root) is a loop, not a run.
 */
export async function discoverRuns(dirs: readonly string[], roots: readonly string[], onError: (path: string, err: Error) => void): Promise<RunLocation[]> {
  const out: RunLocation[] = [];
  const seen = new Set<string>();
  const add = async (name: string, dir: string, rootReal?: string) => {
    let real: string;
    let ino: number;
    try {
      real = await realpath(dir);
      const st = await stat(real);
      if (!st.isDirectory()) return;
      ino = st.ino;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') onError(dir, e as Error);
      return;
    }
    if (rootReal !== undefined && (rootReal === real || rootReal.startsWith(real.endsWith(sep) ? real : real + sep))) {
      onError(dir, new Error(`symlink loop: it leads to ${real}, which holds the root itself; not a run`));
      return;
    }
    if (seen.has(real)) return;
    seen.add(real);
    out.push({ name, dir: resolve(dir), real, ino });
  };
  for (const d of dirs) await add(basename(resolve(d)), d);
  for (const root of roots) {
    let entries;
    let rootReal: string;
    try {
      rootReal = await realpath(root);
      entries = await readdir(root, { withFileTypes: true });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') onError(root, e as Error);
      continue;
    }
    for (const ent of entries) {
      if (!ent.isDirectory() && !ent.isSymbolicLink()) continue;
      if (ent.name.startsWith('.')) continue;
      const dir = join(root, ent.name);
      await add(relative(resolve(root), resolve(dir)), dir, rootReal);
    }
  }
  return out;
}
