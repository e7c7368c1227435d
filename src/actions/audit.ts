// The audit log: one JSONL file per run directory recording everything trainwatch did there.
// It is also trainwatch's memory across restarts: open episodes and webhook alerts already
// acted on are rebuilt from it, so a restart never repeats an action.
//
// It is read like any other file a run directory controls: through the verified directory
// handle, O_NOFOLLOW|O_NONBLOCK, regular files only, at most AUDIT_READ_BYTES. A log that cannot
// be read (a FIFO, a directory, a symlink, EACCES) never stops trainwatch from acting: the run
// starts with an empty memory, the error is logged with its fix and counted.
// It rotates: an append that would take it past AUDIT_ROTATE_BYTES first moves it to
// `.trainwatch-audit.jsonl.1` (one kept) and starts the new file with a `checkpoint` entry that
// carries the memory (open episodes with their done actions, the halt record, the newest
// CHECKPOINT_KEYS webhook keys, the recent entries). Reading back = checkpoint + the entries after it.
import { constants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import type { Logger } from '../log.js';
import type { Stats } from '../watch/stats.js';
import { CONTROL_FILES, ConfinementError, openRegular, withRunDir, type AppendLog, type Rotation } from './files.js';

/** One audit entry. `event` says what happened. */
export interface AuditEntry {
  ts: number;
  iso?: string;
  event: 'anomaly' | 'action' | 'resolved' | 'joined' | 'alert_resolved' | 'acknowledged' | 'checkpoint';
  episode: string;
  kind?: string;
  run?: string;
  rank?: number;
  value?: number;
  threshold?: number;
  source?: 'embedded' | 'alertmanager';
  /** webhook de-duplication key: fingerprint@startsAt */
  key?: string;
  action?: string;
  result?: string;
  error?: string;
  message?: string;
  by?: string;
  pid?: number;
  signal?: string;
  /** on a `halt` action: the .HALT found was created by a predecessor killed before recording it */
  recovered?: boolean;
  /** on a `checkpoint` (the head of a rotated log): the memory the earlier generations held */
  state?: Checkpoint;
  /** the trainer attempt (state/lifecycle.ts attemptKeyOf) an episode belongs to */
  attempt?: string;
  /** why an episode was resolved or acknowledged (`superseded`, `halt_removed`, `anomaly_type_removed`, `halt_cleared`) */
  reason?: string;
}

/** An episode the audit log shows as not yet resolved; `done` maps each completed action to its time. */
export interface OpenEpisode {
  kind: string;
  source: string;
  /** webhook alerts (fingerprint@startsAt) still firing in this episode */
  keys: Set<string>;
  rank?: number;
  ts: number;
  done: Map<string, number>;
  /** read back from the audit log: an earlier process opened it */
  restored?: boolean;
  /** the trainer attempt it belongs to; a new attempt supersedes it */
  attempt?: string;
}

/** What the audit log says is still going on. */
export interface AuditMemory {
  /** episodes with an `anomaly` entry and no `resolved` entry, by episode id */
  open: Map<string, OpenEpisode>;
  /** webhook keys already acted on */
  keys: Set<string>;
  /** the newest entries, for the status page (at most RECENT_AUDIT) */
  recent: AuditEntry[];
  /** the newest .HALT this trainwatch wrote, and the escalation signals sent since */
  halt?: HaltRecord;
  /** the kind of the .HALT being written right now (not persisted): a .HALT seen mid-write is ours too */
  writingHalt?: string;
  /** the newest removal of .HALT (an operator's, or the auto-clear): older evidence is not judged at all */
  ackTs?: number;
  /** the newest removal of .HALT or .anomaly_type: older evidence opens no new episode */
  typeAckTs?: number;
}

/** When .HALT was written (by which episode), and which signals followed it. */
export interface HaltRecord {
  episode: string;
  at: number;
  done: Map<string, number>;
  /** the kind its line names */
  kind?: string;
  /** the attempt it addressed */
  attempt?: string;
}

/** The memory a rotated audit log carries over, as the head entry of the new file. */
export interface Checkpoint {
  open: Array<{ episode: string; kind: string; source: string; keys: string[]; rank?: number; ts: number; done: Record<string, number>; attempt?: string }>;
  /** webhook keys not in an open episode, oldest first (the newest CHECKPOINT_KEYS) */
  keys: string[];
  halt?: { episode: string; at: number; done: Record<string, number>; kind?: string; attempt?: string };
  recent: AuditEntry[];
  ackTs?: number;
  typeAckTs?: number;
}

/** How many recent audit entries are kept in memory per run. */
export const RECENT_AUDIT = 20;

/** The audit log rotates when an append would take it past this size (one older generation is kept as `.1`). */
export const AUDIT_ROTATE_BYTES = 4 << 20;

/** Webhook keys of closed episodes a checkpoint carries: the newest this many (~80 bytes each). */
export const CHECKPOINT_KEYS = 4096;

/** The most bytes of an audit log read on startup (a rotated log is at most AUDIT_ROTATE_BYTES plus one append). */
const AUDIT_READ_BYTES = 2 * AUDIT_ROTATE_BYTES;

/** In a log too big to read whole (never rotated), how much of its head is read for a checkpoint. */
const CHECKPOINT_READ_BYTES = 1 << 20;

/** Reasons of trainwatch_audit_errors_total. */
export const AUDIT_ERROR_REASONS = ['read_refused', 'read_failed', 'append_failed', 'rotate_failed'] as const;

/** One of AUDIT_ERROR_REASONS. */
export type AuditErrorReason = (typeof AUDIT_ERROR_REASONS)[number];

/** Whether a `halt` action's result means this trainwatch put .HALT in place. */
export const haltWritten = (result: string | undefined) => result === 'ok' || result === 'ok_empty' || result === 'replaced_non_regular';

/** Remembers an entry in the bounded recent list. */
export function remember(mem: AuditMemory, e: AuditEntry): void {
  mem.recent.push(e);
  if (mem.recent.length > RECENT_AUDIT) mem.recent.shift();
}

/** A run, as the audit log's I/O needs it. */
interface RunPaths {
  name: string;
  dir: string;
  real: string;
}

/**
 * Reads a run's audit log back into memory. A missing log is an empty memory; so is one that
 * cannot be read, after logging the fix and counting it: acting matters more than remembering.
 */
export async function readAudit(run: RunPaths, o: { log: Logger; stats: Stats }): Promise<AuditMemory> {
  let lines: string[] = [];
  try {
    lines = await readAuditLines(run.dir, run.real);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const refused = err.code === 'ELOOP' || err.code === 'ENOTREG' || e instanceof ConfinementError;
    o.stats.auditError(refused ? 'read_refused' : 'read_failed');
    o.log.error(
      { run: run.name, file: `${run.real}/${CONTROL_FILES.audit}`, err: err.message },
      `cannot read the audit log: acting without its memory (episodes open before this start begin again, redelivered alerts may act again). Fix: ${readFix(err)}`,
    );
  }
  return replay(lines);
}

function readFix(e: NodeJS.ErrnoException): string {
  switch (e.code) {
    case 'ELOOP':
      return 'it is a symlink, which trainwatch never follows there; replace it with the log itself, or move it away';
    case 'ENOTREG':
      return 'it is not a regular file; move it away (trainwatch creates a new log)';
    case 'EACCES':
    case 'EPERM':
      return `permission denied: make it readable and writable by uid ${process.getuid?.() ?? '?'}`;
    default:
      return `${e.code ?? e.message}; move the file away if it persists`;
  }
}

// The lines of a run's audit log: all of it, or (too big, never rotated) a head checkpoint and the newest bytes.
async function readAuditLines(dir: string, real: string): Promise<string[]> {
  return withRunDir(dir, real, async (d) => {
    let opened;
    try {
      opened = await openRegular(d, CONTROL_FILES.audit, constants.O_RDONLY);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const { fh, st } = opened;
    try {
      if (st.size <= AUDIT_READ_BYTES) return (await readAt(fh, 0, st.size)).split('\n');
      const head = await readAt(fh, 0, CHECKPOINT_READ_BYTES);
      const first = head.slice(0, Math.max(0, head.indexOf('\n')));
      const tail = await readAt(fh, st.size - AUDIT_READ_BYTES, AUDIT_READ_BYTES);
      return [...(first.includes('"event":"checkpoint"') ? [first] : []), ...tail.slice(tail.indexOf('\n') + 1).split('\n')];
    } finally {
      await fh.close().catch(() => undefined);
    }
  });
}

async function readAt(fh: FileHandle, pos: number, len: number): Promise<string> {
  const buf = Buffer.alloc(len);
  let got = 0;
  while (got < len) {
    const { bytesRead } = await fh.read(buf, got, len - got, pos + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return buf.subarray(0, got).toString('utf8');
}

// Rebuilds the memory from the log's lines, oldest first.
/**
 * Applies an acknowledgement to the memory. Removing .HALT (by an operator, or trainwatch's
 * own auto-clear) clears the run for a resume: every open episode ends and the halt is
 * forgotten. Removing .anomaly_type only marks the time: open episodes stay open (so they are
 * not rewritten), and evidence from before it opens nothing new.
 */
export function acknowledge(mem: AuditMemory, ts: number, reason: string | undefined): void {
  mem.typeAckTs = Math.max(mem.typeAckTs ?? ts, ts);
  if (reason === 'anomaly_type_removed') return;
  mem.ackTs = Math.max(mem.ackTs ?? ts, ts);
  mem.open.clear();
  mem.halt = undefined;
}

function replay(lines: string[]): AuditMemory {
  const mem: AuditMemory = { open: new Map(), keys: new Set(), recent: [] };
  for (const line of lines) {
    if (!line) continue;
    let e: AuditEntry;
    try {
      e = JSON.parse(line) as AuditEntry;
      if (e.event === 'checkpoint') {
        applyCheckpoint(mem, e.state!);
        continue;
      }
    } catch {
      continue; // a line cut by a crash mid-append, or a malformed checkpoint
    }
    remember(mem, e);
    if (e.event === 'anomaly') {
      mem.open.set(e.episode, {
        kind: e.kind ?? '',
        source: e.source ?? 'embedded',
        keys: new Set(e.key ? [e.key] : []),
        rank: e.rank,
        ts: e.ts,
        done: new Map(),
        restored: true,
        attempt: e.attempt,
      });
      if (e.key) mem.keys.add(e.key);
    } else if (e.event === 'joined' && e.key) {
      mem.open.get(e.episode)?.keys.add(e.key);
      mem.keys.add(e.key);
    } else if (e.event === 'alert_resolved' && e.key) {
      mem.open.get(e.episode)?.keys.delete(e.key);
    } else if (e.event === 'action' && e.result !== 'failed') {
      mem.open.get(e.episode)?.done.set(e.action ?? '', e.ts);
      if (e.action === 'halt' && haltWritten(e.result))
        mem.halt = { episode: e.episode, at: e.ts, done: new Map(), kind: e.kind, attempt: e.attempt ?? mem.open.get(e.episode)?.attempt };
      else if (e.action === 'halt_cleared') mem.halt = undefined;
      else if ((e.signal || e.action?.startsWith('exit:')) && mem.halt?.episode === e.episode) mem.halt.done.set(e.action ?? '', e.ts);
    } else if (e.event === 'resolved') {
      mem.open.delete(e.episode);
    } else if (e.event === 'acknowledged') {
      acknowledge(mem, e.ts, e.reason);
    }
  }
  return mem;
}

/** What a checkpoint of `mem` carries (bounded: see CHECKPOINT_KEYS; open episodes are few, one per kind and source). */
export function checkpointOf(mem: AuditMemory): Checkpoint {
  const open = [...mem.open].map(([episode, ep]) => ({
    episode,
    kind: ep.kind,
    source: ep.source,
    keys: [...ep.keys],
    rank: ep.rank,
    ts: ep.ts,
    done: Object.fromEntries(ep.done),
    attempt: ep.attempt,
  }));
  const inOpen = new Set(open.flatMap((ep) => ep.keys));
  const closed = [...mem.keys].filter((k) => !inOpen.has(k));
  const h = mem.halt;
  return {
    open,
    keys: closed.slice(-CHECKPOINT_KEYS),
    ...(h ? { halt: { episode: h.episode, at: h.at, done: Object.fromEntries(h.done), kind: h.kind, attempt: h.attempt } } : {}),
    recent: mem.recent,
    ackTs: mem.ackTs,
    typeAckTs: mem.typeAckTs,
  };
}

// Throws on a malformed checkpoint (the caller skips it like a cut line).
function applyCheckpoint(mem: AuditMemory, cp: Checkpoint): void {
  for (const o of cp.open) {
    mem.open.set(o.episode, {
      kind: o.kind,
      source: o.source,
      keys: new Set(o.keys),
      rank: o.rank,
      ts: o.ts,
      done: new Map(Object.entries(o.done)),
      restored: true,
      attempt: o.attempt,
    });
    for (const k of o.keys) mem.keys.add(k);
  }
  for (const k of cp.keys) mem.keys.add(k);
  if (cp.halt)
    mem.halt = { episode: cp.halt.episode, at: cp.halt.at, done: new Map(Object.entries(cp.halt.done)), kind: cp.halt.kind, attempt: cp.halt.attempt };
  mem.ackTs = cp.ackTs;
  mem.typeAckTs = cp.typeAckTs;
  for (const e of cp.recent) remember(mem, e);
}

/**
 * Appends entries (stamped by the caller) to a run's audit log in one write, rotating it first
 * when it would grow past AUDIT_ROTATE_BYTES, with a checkpoint of `mem` at the head of the new
 * file. A failed append is counted and rethrown; a failed rotation is logged and counted, and the
 * entries still go to the old file.
 */
export async function appendAudit(
  logs: AppendLog,
  run: RunPaths,
  entries: AuditEntry[],
  mem: AuditMemory | undefined,
  o: { log: Logger; stats: Stats; by: string },
): Promise<void> {
  const ts = entries[0]?.ts ?? Date.now() / 1000;
  const rotation: Rotation | undefined = mem && {
    maxBytes: AUDIT_ROTATE_BYTES,
    head: () =>
      JSON.stringify({
        ts,
        iso: new Date(ts * 1000).toISOString(),
        event: 'checkpoint',
        episode: '',
        run: run.name,
        by: o.by,
        state: checkpointOf(mem),
      } satisfies AuditEntry),
    done: (err) => {
      if (!err) {
        o.stats.auditRotations++;
        o.log.info({ run: run.name }, `rotated the audit log to ${CONTROL_FILES.audit}.1; the new log starts with a checkpoint of what it said`);
        return;
      }
      o.stats.auditError('rotate_failed');
      o.log.error(
        { run: run.name, err: err.message },
        `cannot rotate the audit log in ${run.dir}; it keeps growing and is read back only partly after a restart. Fix: make ${CONTROL_FILES.audit}.1 a plain file (or remove it) on a filesystem with hard links`,
      );
    },
  };
  try {
    await logs.append(run.dir, run.real, CONTROL_FILES.audit, entries.map((e) => JSON.stringify(e)).join('\n'), rotation);
  } catch (e) {
    o.stats.auditError('append_failed');
    throw e;
  }
}
