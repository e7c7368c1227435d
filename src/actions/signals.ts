// Process facts and signals for crash detection and escalation (Linux /proc).
import { opendirSync, readFileSync, readlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { ProcFact } from '../state/lifecycle.js';

let bootTimeS: number | undefined;
const TICKS = 100; // USER_HZ: 100 on every mainstream Linux build

/** Unix time at which `pid` started on this host, or undefined if there is no such process. */
export async function processStartTime(pid: number): Promise<number | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime), counted after the ")" that closes the command name.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const start = Number(fields[19]);
    if (bootTimeS === undefined) {
      const m = /^btime (\d+)$/m.exec(await readFile('/proc/stat', 'utf8'));
      bootTimeS = m ? Number(m[1]) : 0;
    }
    return bootTimeS + start / TICKS;
  } catch {
    return undefined;
  }
}

/** Whether `pid` is alive on this host (EPERM still means alive). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Sends a signal; returns `ok` or the error code. */
export function sendSignal(pid: number, sig: NodeJS.Signals): string {
  try {
    process.kill(pid, sig);
    return 'ok';
  } catch (e) {
    return ((e as NodeJS.ErrnoException).code ?? 'error').toLowerCase();
  }
}

/** Reads a /proc file as text; injectable so that the proofs below can be tested against a fake /proc. */
export type ProcReader = (path: string) => string;
const readProc: ProcReader = (path) => readFileSync(path, 'utf8');

/** processStartTime with a direct system call: /proc is in memory, and this runs per quiet run, not per record. */
export function processStartTimeSync(pid: number, read: ProcReader = readProc): number | undefined {
  try {
    const stat = read(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const btime = () => Number(/^btime (\d+)$/m.exec(read('/proc/stat'))?.[1] ?? 0);
    // Only the real /proc's boot time is cached: a fake one must not leak into it.
    const boot = read === readProc ? (bootTimeS ??= btime()) : btime();
    return boot + Number(fields[19]) / TICKS;
  } catch {
    return undefined;
  }
}

/** The real uid of `pid` (first field of "Uid:" in /proc/<pid>/status), or undefined if unknown. */
export function processUid(pid: number, read: ProcReader = readProc): number | undefined {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(read(`/proc/${pid}/status`));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Seconds a trainer may take from process start to its boot record (imports, CUDA and NCCL init). */
export const BOOT_WINDOW_S = 900;
/** Clock slack between /proc start times (10 ms ticks, boot-time rounding) and record timestamps. */
const START_SLACK_S = 5;

/** What the records say about the process that wrote them. */
export interface WriterFacts {
  pid: number;
  /** trainer ts of the first record seen from this pid */
  sinceTs?: number;
  /** trainer ts of its boot record, when it was read */
  bootTs?: number;
}

/**
 * Whether a process that started at `start` can be the writer: it started before its first
 * record (a recycled pid belongs to a process started later), and, for `strict` (signals), no
 * more than BOOT_WINDOW_S before its own boot record (an unrelated long-running process whose
 * pid a record names started long before). Without a boot record, strict is never satisfied.
 */
export function startedAsWriter(start: number, w: WriterFacts, strict: boolean): boolean {
  if (w.sinceTs === undefined || start > w.sinceTs + START_SLACK_S) return false;
  if (!strict) return true;
  return w.bootTs !== undefined && start <= w.bootTs + START_SLACK_S && start >= w.bootTs - BOOT_WINDOW_S;
}

/** Lists a /proc directory (at most `max` names) and reads a /proc symlink; injectable like ProcReader. */
export interface ProcLinks {
  list(dir: string, max: number): string[];
  link(path: string): string;
}
const procLinks: ProcLinks = {
  list(dir, max) {
    // opendir, not readdir: a process with a million descriptors costs at most `max` entries.
    const d = opendirSync(dir);
    const out: string[] = [];
    try {
      for (let e = d.readSync(); e !== null && out.length < max; e = d.readSync()) out.push(e.name);
    } finally {
      d.closeSync();
    }
    return out;
  },
  link: (path) => readlinkSync(path),
};

/** Open descriptors of one process looked at for the proof; a writer's file beyond them is not seen. */
export const MAX_FDS_EXAMINED = 4096;

/**
 * Whether `pid` has its working directory inside `dir` or containing it (not `/`), or one of its
 * first MAX_FDS_EXAMINED open descriptors inside `dir` (a real path: the kernel resolves these
 * links to real paths):
 * `yes`, `no`, or `unreadable` when the kernel refused to show them (another user's process
 * and no CAP_SYS_PTRACE) and nothing readable was inside.
 */
export function holdsInto(pid: number, dir: string, links: ProcLinks = procLinks): 'yes' | 'no' | 'unreadable' {
  const inside = (target: string) => target === dir || target.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
  // The real trainer runs from its checkout with the run below it (out_dir artifacts/<run>), and
  // closes its files after each write: a cwd that contains the run counts too, but never '/'.
  const contains = (cwd: string) => cwd !== '/' && dir.startsWith(cwd.endsWith('/') ? cwd : `${cwd}/`);
  let refused = false;
  const look = (path: string, ok = inside): boolean => {
    try {
      return ok(links.link(path));
    } catch (e) {
      if (deniedCode(e)) refused = true;
      return false; // ENOENT: closed (or the process gone) while we looked
    }
  };
  if (look(`/proc/${pid}/cwd`, (cwd) => inside(cwd) || contains(cwd))) return 'yes';
  let fds: string[] = [];
  try {
    fds = links.list(`/proc/${pid}/fd`, MAX_FDS_EXAMINED);
  } catch (e) {
    if (deniedCode(e)) refused = true;
  }
  for (const fd of fds) if (look(`/proc/${pid}/fd/${fd}`)) return 'yes';
  return refused ? 'unreadable' : 'no';
}

const deniedCode = (e: unknown) => ['EACCES', 'EPERM'].includes((e as NodeJS.ErrnoException).code ?? '');

/** The outcome of escalation's proof: `proven`, or the first check that failed. */
export type WriterProof = 'proven' | 'start_time' | 'uid' | 'not_in_run' | 'proc_unreadable';

/**
 * Escalation's proof that `w.pid` is the process writing this rank's heartbeat file:
 * - it started as the writer did (strict: within BOOT_WINDOW_S before its boot record, not after
 *   its first record);
 * - its real uid owns the file (`fileUid`; undefined, no proof);
 * - its working directory or one of its open files is inside the run directory `runDir` (a real
 *   path), the heartbeat file itself included (holdsInto).
 * A pid a record names that belongs to another user's process, to one started at another time,
 * or to one with nothing in the run directory, is never signalled. When /proc refuses to show
 * the cwd and descriptors, the proof fails (`proc_unreadable`): closed, not open.
 */
export function provenWriter(
  w: WriterFacts,
  fileUid: number | undefined,
  runDir: string,
  read: ProcReader = readProc,
  links: ProcLinks = procLinks,
): WriterProof {
  const start = processStartTimeSync(w.pid, read);
  if (start === undefined || !startedAsWriter(start, w, true)) return 'start_time';
  if (fileUid === undefined || processUid(w.pid, read) !== fileUid) return 'uid';
  const held = holdsInto(w.pid, runDir, links);
  return held === 'yes' ? 'proven' : held === 'no' ? 'not_in_run' : 'proc_unreadable';
}

/**
 * Sees one writer's process (watch.pid-check): `alive` if a process with its pid started as
 * the writer did; otherwise `gone` if it was seen alive before (or `on` says trainwatch shares
 * the trainers' pid namespace), else `unknown`.
 */
export function procFact(w: WriterFacts, mode: 'auto' | 'on' | 'off', seenAlive: Set<number>): ProcFact {
  if (mode === 'off') return 'unknown';
  const start = processStartTimeSync(w.pid);
  if (start !== undefined && startedAsWriter(start, w, false)) {
    seenAlive.add(w.pid);
    return 'alive';
  }
  return seenAlive.has(w.pid) || mode === 'on' ? 'gone' : 'unknown';
}
