// The audit log: one JSONL file per run directory recording everything trainwatch did there.
// It is also trainwatch's memory across restarts: open episodes and webhook alerts already
// acted on are rebuilt from it, so a restart never repeats an action.
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { CONTROL_FILES } from './files.js';

/** One audit entry. `event` says what happened. */
export interface AuditEntry {
  ts: number;
  iso?: string;
  event: 'anomaly' | 'action' | 'resolved' | 'joined' | 'alert_resolved' | 'acknowledged';
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

/** How many recent audit entries are kept in memory per run. */
export const RECENT_AUDIT = 20;

/** Remembers an entry in the bounded recent list. */
export function remember(mem: AuditMemory, e: AuditEntry): void {
  mem.recent.push(e);
  if (mem.recent.length > RECENT_AUDIT) mem.recent.shift();
}

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

/** The newest bytes of the audit log read on startup: bounded, like the heartbeat tail. */
const AUDIT_TAIL_BYTES = 4 << 20;

/** Reads the end of a run's audit log. A missing log is an empty memory. */
export async function readAudit(real: string): Promise<AuditMemory> {
  const mem: AuditMemory = { open: new Map(), keys: new Set(), recent: [] };
  let text = '';
  try {
    const fh = await open(join(real, CONTROL_FILES.audit), 'r');
    try {
      const { size } = await fh.stat();
      const start = Math.max(0, size - AUDIT_TAIL_BYTES);
      const buf = Buffer.alloc(size - start);
      await fh.read(buf, 0, buf.length, start);
      text = buf.toString('utf8');
      if (start > 0) text = text.slice(text.indexOf('\n') + 1);
    } finally {
      await fh.close();
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return mem;
    throw e;
  }
  for (const line of text.split('\n')) {
    if (!line) continue;
    let e: AuditEntry;
    try {
      e = JSON.parse(line) as AuditEntry;
    } catch {
      continue; // a line cut by a crash mid-append
    }
    remember(mem, e);
    if (e.event === 'anomaly') {
      mem.open.set(e.episode, { kind: e.kind ?? '', source: e.source ?? 'embedded', keys: new Set(e.key ? [e.key] : []), rank: e.rank, ts: e.ts, done: new Map(), restored: true, attempt: e.attempt });
      if (e.key) mem.keys.add(e.key);
    } else if (e.event === 'joined' && e.key) {
      mem.open.get(e.episode)?.keys.add(e.key);
      mem.keys.add(e.key);
    } else if (e.event === 'alert_resolved' && e.key) {
      mem.open.get(e.episode)?.keys.delete(e.key);
    } else if (e.event === 'action' && e.result !== 'failed') {
      mem.open.get(e.episode)?.done.set(e.action ?? '', e.ts);
      if (e.action === 'halt' && e.result === 'ok') mem.halt = { episode: e.episode, at: e.ts, done: new Map(), kind: e.kind, attempt: e.attempt ?? mem.open.get(e.episode)?.attempt };
      else if (e.action === 'halt_cleared') mem.halt = undefined;
      else if (e.signal && mem.halt?.episode === e.episode) mem.halt.done.set(e.action ?? '', e.ts);
    } else if (e.event === 'resolved') {
      mem.open.delete(e.episode);
    } else if (e.event === 'acknowledged') {
      acknowledge(mem, e.ts, e.reason);
    }
  }
  return mem;
}
