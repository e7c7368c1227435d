// Episodes and the actions they take: the only module that decides what to write into run
// directories. Both the embedded detector and the Alertmanager webhook go through it.
//
// An episode starts when an anomaly kind becomes active on a run (embedded) or when a new
// alert (fingerprint@startsAt) fires (webhook). Starting one records an `anomaly` audit entry
// (the intent), then performs the required actions: .anomaly_type and .anomaly.json together,
// then (when halting is enabled and the kind may halt) .HALT, so that a trainer that sees .HALT
// finds the reason next to it; each result is recorded as an `action` entry.
// Per run, work is serialised on one promise chain: concurrent duplicate deliveries act exactly
// once. The audit entries of one step (one evaluation, or the alerts of one delivery for a run)
// are appended together: before any control file is written, so the intent is durable first,
// and at the end of the step, before the webhook answers.
// A crash after the writes and before their entries leaves the actions unrecorded: the restarted
// trainwatch continues the episode from its `anomaly` entry and performs them again. Rewriting
// the two files is harmless (same content); .HALT is never overwritten, and one that holds this
// episode's line and is not older than the episode is recognised as the predecessor's own, so it
// counts as written (and escalation follows) instead of as found.
// An action that failed stays pending and is retried on the next evaluation or delivery. While
// the episode lasts nothing is rewritten, so an operator who deletes .anomaly_type is not
// fought with; the next episode writes it again. On restart the audit log is read back, so
// open episodes continue and no completed action is repeated.
import { randomUUID } from 'node:crypto';
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Anomaly } from '../detect/detect.js';
import { kindOf } from '../detect/kinds.js';
import type { Logger } from '../log.js';
import type { Stats } from '../watch/stats.js';
import {
  acknowledge as ackMemory,
  appendAudit,
  haltWritten,
  readAudit,
  remember,
  type AuditEntry,
  type AuditMemory,
  type HaltRecord,
  type OpenEpisode,
} from './audit.js';
import { AppendLog, CONTROL_FILES, ConfinementError, holdsSince, removeIfHolds, stage, writeAtomic, type Staged } from './files.js';
import { sendSignal } from './signals.js';
import { primaryOf } from '../detect/detect.js';
import type { ProcFact } from '../state/lifecycle.js';

/** A watched run directory, as discovery resolved it. */
export interface RunRef {
  name: string;
  dir: string;
  real: string;
  /** .HALT is there now: new episodes are audited, but the control files keep the halt's reason */
  halted?: boolean;
  /** the trainer is known to have exited: .HALT is never written */
  exited?: boolean;
  /** the trainer attempt the records belong to (state/lifecycle.ts) */
  attemptKey?: string;
  /** whether .HALT may be written in this run (its profile's halt); the global --halt otherwise */
  haltAllowed?: boolean;
}

/** Options of the actions module. */
export interface ActionOptions {
  halt: boolean;
  /** who acts, for the audit log: host and pid */
  by: string;
  escalateS: number;
  escalateTermS: number;
  /** seconds after SIGTERM before SIGKILL; 0 never */
  escalateKillS: number;
  /** remove our own .HALT once the trainer it addressed exited */
  autoClearHalt: boolean;
  log: Logger;
  stats: Stats;
  /** `trainwatch status` reading files by itself: the audit log is read, never appended to */
  readOnly?: boolean;
  /** called once an episode's opening or end is in the audit log (notifications); must not throw */
  onEpisode?: (event: EpisodeEvent) => void;
}

/** An episode opened or ended, as recorded in the audit log. */
export interface EpisodeEvent {
  event: 'opened' | 'resolved';
  run: RunRef;
  episode: string;
  kind: string;
  rank?: number;
  message?: string;
  source?: string;
  ts: number;
}

/** An alert from Alertmanager, mapped to a run. */
export interface AlertInput {
  key: string;
  kind: string;
  status: 'firing' | 'resolved';
  halts: boolean;
  rank?: number;
  message: string;
}

/** What the webhook did with one alert. */
export type AlertOutcome = 'acted' | 'joined' | 'duplicate' | 'resolved' | 'resolved_duplicate';

/** A rank's trainer process, for escalation. */
export interface TrainerProc {
  pid: number;
  /** trainer ts of the rank's newest liveness record */
  lastLivenessTs?: number;
  /**
   * Whether the process is the trainer that wrote the records (the shell's proof, signals.ts
   * provenWriter); asked only just before a signal, since the proof reads /proc.
   */
  verify(): boolean;
  /** what the shell sees of it now */
  fact: ProcFact;
}

/** How much older than its episode a predecessor's .HALT may look (file-system clock granularity). */
const HALT_MTIME_SLACK_MS = 1000;

interface RunActions {
  chain: Promise<unknown>;
  mem?: AuditMemory;
}

/** Acts on anomalies and alerts; see the header comment for the episode rules. */
export class Actions {
  private readonly runs = new Map<string, RunActions>();
  private readonly auditLog = new AppendLog();

  constructor(private readonly o: ActionOptions) {}

  /**
   * Embedded mode: make the episodes of `run` match the anomalies detected now. Kinds that are
   * quiet while halted neither start nor end an episode while .HALT exists. Episodes of an
   * earlier attempt end (`superseded`). Only the primary episode (kinds.ts priority) writes the
   * control files, so `.anomaly_type`, `.anomaly.json` and `.HALT` name the same kind; while
   * .HALT is there, no episode rewrites them.
   */
  reconcile(run: RunRef, anomalies: Anomaly[], now: number, procs: TrainerProc[] = []): Promise<void> {
    const halted = run.halted ?? false;
    return this.serial(run, async (mem) => {
      const batch = new Batch();
      let err: unknown;
      try {
        const active = new Map<string, Anomaly>();
        for (const a of anomalies) if (!active.has(a.kind)) active.set(a.kind, a);
        const open = new Map<string, [string, OpenEpisode]>();
        for (const [id, ep] of mem.open) {
          if (ep.source !== 'embedded') continue;
          if (run.attemptKey !== undefined && ep.attempt !== undefined && ep.attempt !== run.attemptKey) {
            batch.push({
              ts: now,
              event: 'resolved',
              episode: id,
              kind: ep.kind,
              source: 'embedded',
              rank: ep.rank,
              reason: 'superseded',
              attempt: ep.attempt,
            });
            mem.open.delete(id);
            continue;
          }
          open.set(ep.kind, [id, ep]);
        }
        for (const [kind, [id, ep]] of open) {
          if (active.has(kind) || (halted && kindOf(kind)?.quietWhileHalted)) continue;
          batch.push({ ts: now, event: 'resolved', episode: id, kind, source: 'embedded', rank: ep.rank });
          mem.open.delete(id);
          open.delete(kind);
        }
        for (const a of active.values()) {
          if (open.has(a.kind)) continue;
          // An operator removed .anomaly_type after this evidence: it opens nothing new.
          if (mem.typeAckTs !== undefined && a.evidenceTs !== undefined && a.evidenceTs <= mem.typeAckTs) continue;
          const id = randomUUID();
          batch.push({
            ts: now,
            event: 'anomaly',
            episode: id,
            kind: a.kind,
            run: run.name,
            rank: a.rank,
            value: a.value,
            threshold: a.threshold,
            source: 'embedded',
            message: a.message,
            attempt: run.attemptKey,
          });
          const opened: OpenEpisode = { kind: a.kind, source: 'embedded', keys: new Set(), rank: a.rank, ts: now, done: new Map(), attempt: run.attemptKey };
          mem.open.set(id, opened);
          open.set(a.kind, [id, opened]);
          this.o.log.warn({ run: run.name, rank: a.rank, anomaly: a.kind, value: a.value, threshold: a.threshold }, a.message);
        }
        const primary = primaryOf([...active.values()]);
        const ep = primary && open.get(primary.kind);
        // While a .HALT is there nothing is rewritten, except by the episode that halted (its
        // failed writes are retried) or to record what a predecessor killed mid-episode already
        // wrote (see the header).
        if (ep && (ep[1].done.has('halt') || (ep[1].restored && !ep[1].done.has('halt')) || !(await haltThere(run))))
          await this.ensureActions(run, mem, ep[0], ep[1], kindOf(primary.kind)?.halts ?? false, primary.message, now, batch, {
            value: primary.value,
            threshold: primary.threshold,
            ...primary.details,
          });
      } catch (e) {
        err = e;
      }
      await this.flush(run, batch).catch((e: unknown) => (err ??= e));
      if (err) throw err;
      if (halted) await this.afterHalt(run, mem, procs, now);
    });
  }

  /**
   * An operator removed .HALT or .anomaly_type (or trainwatch removed its own .HALT): nothing
   * recorded before `now` may open a new episode; removing .HALT also ends the open episodes,
   * so the run waits for a new trainer. Recorded, so that a restart keeps it.
   */
  acknowledge(run: RunRef, now: number, reason: 'halt_removed' | 'anomaly_type_removed'): Promise<void> {
    return this.serial(run, async (mem) => {
      if (reason === 'anomaly_type_removed' && mem.open.size === 0) return; // nothing to acknowledge
      ackMemory(mem, now, reason);
      this.o.log.info(
        { run: run.name, reason },
        reason === 'halt_removed'
          ? '.HALT removed: the run is cleared for a resume; waiting for a new trainer'
          : '.anomaly_type removed: the episode is acknowledged',
      );
      await this.audit(run, { ts: now, event: 'acknowledged', episode: '', reason });
    });
  }

  /** The kind named by the .HALT trainwatch wrote into a run, if its audit memory is loaded and says so. */
  haltKind(real: string): string | undefined {
    const mem = this.runs.get(real)?.mem;
    return mem?.writingHalt ?? mem?.halt?.kind;
  }

  /** The time of the run's newest acknowledgement, read back from the audit log on first use. */
  async ackTs(run: RunRef): Promise<number | undefined> {
    return this.serial(run, async (mem) => mem.ackTs);
  }

  /** What the audit memory says of the run's .HALT and .anomaly_type, for telling an operator's removal after a restart. */
  async expected(run: RunRef): Promise<{ halt: boolean; anomalyType: boolean; haltKind?: string }> {
    return this.serial(run, async (mem) => {
      const ours = mem.halt !== undefined && (run.attemptKey === undefined || mem.halt.attempt === undefined || mem.halt.attempt === run.attemptKey);
      const typed = [...mem.open.values()].some(
        (ep) => ep.done.has('anomaly_type') && (run.attemptKey === undefined || ep.attempt === undefined || ep.attempt === run.attemptKey),
      );
      return { halt: ours, anomalyType: typed, haltKind: mem.halt?.kind };
    });
  }

  /** Mode alertmanager, .HALT present: only escalation and the auto-clear after our own .HALT. */
  escalateOnly(run: RunRef, now: number, procs: TrainerProc[]): Promise<void> {
    return this.serial(run, (mem) => this.afterHalt(run, mem, procs, now));
  }

  /**
   * Webhook: act on the alerts of one delivery for `run`, in order, each at most once per key
   * (fingerprint@startsAt). Like the embedded detector, an episode is one anomaly kind on one
   * run: the alerts of several ranks join the open episode of their kind, and it ends when the
   * last of them resolves. Their audit entries go out together (one append; the intent of a new
   * episode before its files), so the 8 alerts of a delivery cost one fdatasync, not 8. Returns
   * per alert its outcome, or the error that failed it (then Alertmanager should retry).
   */
  alerts(run: RunRef, inputs: AlertInput[], now: number): Promise<Array<AlertOutcome | Error>> {
    return this.serial(run, async (mem) => {
      const batch = new Batch();
      const out: Array<AlertOutcome | Error> = [];
      const halts = new Map<string, boolean>();
      for (const [i, a] of inputs.entries()) {
        batch.owner = i;
        halts.set(a.kind, kindOf(a.kind)?.halts ?? a.halts);
        out.push(this.alert(run, mem, a, now, batch));
      }
      // One primary episode writes the control files (see reconcile); a failure there fails
      // the alerts of that episode, so Alertmanager retries them.
      const firing = [...mem.open]
        .filter(([, ep]) => ep.source === 'alertmanager' && ep.keys.size > 0)
        .map(([id, ep]) => ({ id, ep, kind: ep.kind, rank: ep.rank }));
      const primary = primaryOf(firing);
      if (primary && (primary.ep.done.has('halt') || !(await haltThere(run)))) {
        batch.owner = -1;
        const mine = inputs.flatMap((a, i) => (primary.ep.keys.has(a.key) ? [i] : []));
        try {
          await this.ensureActions(
            run,
            mem,
            primary.id,
            primary.ep,
            halts.get(primary.kind) ?? kindOf(primary.kind)?.halts ?? false,
            inputs.find((a) => primary.ep.keys.has(a.key))?.message ?? primary.kind,
            now,
            batch,
          );
        } catch (e) {
          for (const i of mine) out[i] = e as Error;
        }
        for (const i of mine) if (batch.failed.has(-1)) out[i] = batch.failed.get(-1)!;
      }
      await this.flush(run, batch).catch(() => undefined);
      for (const [i, e] of batch.failed) if (i >= 0 && !(out[i] instanceof Error)) out[i] = e;
      return out;
    });
  }

  private alert(run: RunRef, mem: AuditMemory, a: AlertInput, now: number, batch: Batch): AlertOutcome {
    const mine = [...mem.open].find(([, ep]) => ep.keys.has(a.key));
    if (a.status === 'resolved') {
      if (!mine) return 'resolved_duplicate';
      const [id, ep] = mine;
      ep.keys.delete(a.key);
      // Recorded, never undone: .HALT stays until a person removes it.
      if (ep.keys.size > 0) {
        batch.push({ ts: now, event: 'alert_resolved', episode: id, kind: ep.kind, source: 'alertmanager', key: a.key });
        return 'resolved';
      }
      batch.push({ ts: now, event: 'resolved', episode: id, kind: ep.kind, source: 'alertmanager', key: a.key });
      mem.open.delete(id);
      return 'resolved';
    }
    if (mine) return 'duplicate';
    if (mem.keys.has(a.key)) return 'duplicate'; // fired, acted on and resolved already
    mem.keys.add(a.key);
    const same = [...mem.open].find(([, ep]) => ep.source === 'alertmanager' && ep.kind === a.kind);
    if (same) {
      const [id, ep] = same;
      ep.keys.add(a.key);
      batch.push({ ts: now, event: 'joined', episode: id, kind: a.kind, rank: a.rank, source: 'alertmanager', key: a.key });
      return 'joined';
    }
    const id = randomUUID();
    batch.push({
      ts: now,
      event: 'anomaly',
      episode: id,
      kind: a.kind,
      run: run.name,
      rank: a.rank,
      source: 'alertmanager',
      key: a.key,
      message: a.message,
      attempt: run.attemptKey,
    });
    const ep: OpenEpisode = { kind: a.kind, source: 'alertmanager', keys: new Set([a.key]), rank: a.rank, ts: now, done: new Map(), attempt: run.attemptKey };
    mem.open.set(id, ep);
    this.o.log.warn({ run: run.name, rank: a.rank, anomaly: a.kind, key: a.key }, `alert from Alertmanager: ${a.message}`);
    return 'acted';
  }

  /** Forgets a run that is no longer watched, and closes its audit log. */
  forget(real: string): void {
    this.runs.delete(real);
    void this.auditLog.closeDir(real);
  }

  /** Closes every audit log (on stop). */
  close(): Promise<void> {
    return this.auditLog.close();
  }

  /** Open episodes of a run (for the status page). */
  openEpisodes(real: string): OpenEpisode[] {
    return [...(this.runs.get(real)?.mem?.open.values() ?? [])];
  }

  /** The newest audit entries of a run (for the status page). */
  recent(real: string): AuditEntry[] {
    return this.runs.get(real)?.mem?.recent ?? [];
  }

  private serial<T>(run: RunRef, fn: (mem: AuditMemory) => Promise<T>): Promise<T> {
    let ra = this.runs.get(run.real);
    if (!ra) {
      ra = { chain: Promise.resolve() };
      this.runs.set(run.real, ra);
    }
    const state = ra;
    const next = state.chain.then(async () => {
      state.mem ??= await readAudit(run, this.o);
      return fn(state.mem);
    });
    state.chain = next.catch(() => undefined);
    return next;
  }

  // Performs whichever required actions of an episode are not done yet; their results join the
  // batch. Throws if any failed with an error a retry could fix, so that the webhook can answer 5xx.
  private async ensureActions(
    run: RunRef,
    mem: AuditMemory,
    id: string,
    ep: OpenEpisode,
    kindHalts: boolean,
    message: string,
    now: number,
    batch: Batch,
    values: Record<string, number | undefined> = {},
  ): Promise<void> {
    const kind = ep.kind;
    // Never into a run whose trainer is known to have exited: it would stop the next resume.
    const halting = (run.haltAllowed ?? this.o.halt) && kindHalts && !ep.done.has('halt') && !run.exited;
    if (!halting && ep.done.has('anomaly_type') && ep.done.has('details')) return;
    // The intent (the `anomaly` entry) is durable before any file is written, if it can be: a
    // failed append (logged, counted, and failing the step's outcome) must not stop the halt.
    await this.flush(run, batch).catch(() => undefined);
    let failure: Error | undefined;
    const step = async (action: string, fn: () => Promise<string>): Promise<AuditEntry | undefined> => {
      if (ep.done.has(action)) return undefined;
      try {
        const got = await fn();
        const result = got === 'recovered' ? 'ok' : got;
        ep.done.set(action, now);
        this.o.stats.action(action, result);
        if (action === 'halt' && haltWritten(result)) {
          mem.halt = { episode: id, at: now, done: new Map(), kind, attempt: ep.attempt };
          if (got === 'ok') this.o.log.warn({ run: run.name, anomaly: kind }, 'wrote .HALT: the trainer will stop at its next step');
        }
        return {
          ts: now,
          event: 'action',
          episode: id,
          kind,
          action,
          result,
          ...(ep.attempt ? { attempt: ep.attempt } : {}),
          ...(got === 'recovered' ? { recovered: true } : {}),
        };
      } catch (e) {
        this.o.stats.action(action, 'failed');
        const err = e as NodeJS.ErrnoException;
        this.o.log.error({ run: run.name, action, err: err.message }, `cannot write into ${run.dir}: ${fixFor(err)}`);
        if (!(e instanceof ConfinementError)) failure ??= err;
        return { ts: now, event: 'action', episode: id, kind, action, result: 'failed', error: err.message };
      }
    };
    // .HALT's content is staged while the other two are written; only linking it waits for them.
    // On a full disk .HALT is staged empty: the trainer only tests that it exists.
    const haltStaged = halting ? stage(run.dir, run.real, CONTROL_FILES.halt, haltLine(kind), true) : undefined;
    haltStaged?.catch(() => undefined); // its failure is reported by the halt step
    // The values replace the original's gate_collapse_details.json (docs/detection.md); non-finite ones travel as strings.
    const vals = Object.fromEntries(Object.entries(values).map(([k, v]) => [k, v === undefined || Number.isFinite(v) ? v : String(v)]));
    const details =
      JSON.stringify(
        {
          kind,
          run: run.name,
          rank: ep.rank,
          message,
          ...vals,
          source: ep.source,
          alerts: [...ep.keys],
          episode: id,
          detected_at: new Date(ep.ts * 1000).toISOString(),
          by: this.o.by,
        },
        null,
        2,
      ) + '\n';
    const entries = await Promise.all([
      step('anomaly_type', async () => (await writeAtomic(run.dir, run.real, CONTROL_FILES.anomalyType, `${kind}\n`), 'ok')),
      step('details', async () => (await writeAtomic(run.dir, run.real, CONTROL_FILES.details, details), 'ok')),
    ]);
    // After both: the trainer reads the reason when it sees .HALT.
    if (haltStaged) {
      // Set before the link: a status read between the link and the audit entry still names trainwatch as the author.
      mem.writingHalt = kind;
      entries.push(await step('halt', async () => this.createHalt(run, ep, kind, await haltStaged)).finally(() => (mem.writingHalt = undefined)));
    }
    for (const e of entries) if (e) batch.push(e);
    if (failure) throw failure;
  }

  // 'ok' if this creates .HALT, 'recovered' if the episode was read back from the audit log and
  // .HALT is the one its predecessor created before being killed (see the header), else 'exists'.
  private async createHalt(run: RunRef, ep: OpenEpisode, kind: string, staged: Staged): Promise<string> {
    const line = haltLine(kind);
    const got = await staged.createExclusive();
    if (got !== 'exists') return got;
    // The slack covers coarse file-system timestamps, which can trail the clock a little.
    if (ep.restored && (await holdsSince(run.real, CONTROL_FILES.halt, line, ep.ts * 1000 - HALT_MTIME_SLACK_MS))) {
      this.o.log.warn({ run: run.name, anomaly: kind }, '.HALT was created for this episode before a restart; counting it as written');
      return 'recovered';
    }
    return 'exists';
  }

  // After our .HALT: escalation for a hung trainer, and the opt-in auto-clear once it exited.
  private async afterHalt(run: RunRef, mem: AuditMemory, procs: TrainerProc[], now: number): Promise<void> {
    const h = mem.halt;
    if (!h) return;
    await this.escalate(run, h, procs, now);
    if (this.o.autoClearHalt && run.exited && procs.every((p) => p.fact !== 'alive')) await this.autoClear(run, mem, h, now);
  }

  // A hung training loop never polls .HALT: some time after we halted a stalled run, ask each
  // verified trainer process that has not written since for its stacks (SIGUSR1), then to stop
  // (SIGTERM), then (opt-in) SIGKILL, because the NSA trainer catches SIGTERM and runs on. Each
  // signal goes once; the result is whether the process is gone, recorded when it is seen gone.
  // Only stalls escalate: any other kind's trainer still runs its loop and reads .HALT.
  private async escalate(run: RunRef, h: HaltRecord, procs: TrainerProc[], now: number): Promise<void> {
    if (this.o.escalateS <= 0 || now - h.at < this.o.escalateS || h.kind !== 'heartbeat_stall') return;
    for (const p of procs) {
      const sent = ESCALATION.filter((sig) => h.done.has(`${sig.toLowerCase()}:${p.pid}`));
      if (sent.length > 0 && p.fact === 'gone') {
        const exit = `exit:${p.pid}`;
        if (h.done.has(exit)) continue;
        h.done.set(exit, now);
        const after = sent[sent.length - 1];
        this.o.stats.action('trainer_exit', 'exited');
        await this.audit(run, { ts: now, event: 'action', episode: h.episode, action: exit, result: 'exited', pid: p.pid, signal: after });
        this.o.log.warn({ run: run.name, pid: p.pid, after }, `escalation ended the hung trainer: pid ${p.pid} exited after ${after}`);
        continue;
      }
      if (p.fact !== 'alive') continue;
      if (p.lastLivenessTs !== undefined && p.lastLivenessTs > h.at) continue; // still writing: not hung
      const next = ESCALATION[sent.length];
      if (!next) continue;
      const prev = sent.length > 0 ? h.done.get(`${sent[sent.length - 1].toLowerCase()}:${p.pid}`)! : h.at;
      const wait = next === 'SIGUSR1' ? 0 : next === 'SIGTERM' ? this.o.escalateTermS : this.o.escalateKillS;
      if (next !== 'SIGUSR1' && (wait <= 0 || now - prev < wait)) continue;
      await this.signal(run, h, p, next, now);
    }
  }

  private async signal(run: RunRef, h: HaltRecord, p: TrainerProc, sig: (typeof ESCALATION)[number], now: number): Promise<void> {
    // Only a verified process gets a signal: on this host, started shortly before its own boot
    // record, running as the owner of its rank's heartbeat file, with its cwd or an open file in
    // the run directory (signals.ts provenWriter). A pid in a record is otherwise anybody's.
    const result = p.verify() ? (sendSignal(p.pid, sig) === 'ok' ? 'sent' : 'not_running') : 'unverified';
    h.done.set(`${sig.toLowerCase()}:${p.pid}`, now);
    this.o.stats.action(sig.toLowerCase(), result);
    await this.audit(run, { ts: now, event: 'action', episode: h.episode, action: `${sig.toLowerCase()}:${p.pid}`, result, pid: p.pid, signal: sig });
    this.o.log.warn({ run: run.name, pid: p.pid, signal: sig, result }, 'escalation for a hung trainer');
  }

  // The trainer that our .HALT addressed has exited: remove that .HALT (only if it still holds
  // our line), so that an automated restart trains. It counts as an acknowledgement.
  private async autoClear(run: RunRef, mem: AuditMemory, h: HaltRecord, now: number): Promise<void> {
    let result: string;
    try {
      result = (await removeIfHolds(run.real, CONTROL_FILES.halt, haltLine(h.kind ?? ''))) ? 'ok' : 'not_ours';
    } catch (e) {
      result = 'failed';
      this.o.log.error({ run: run.name, err: (e as Error).message }, `cannot remove .HALT: ${fixFor(e as NodeJS.ErrnoException)}`);
    }
    this.o.stats.action('halt_cleared', result);
    if (result === 'failed') return; // retried at the next evaluation
    await this.audit(run, { ts: now, event: 'action', episode: h.episode, action: 'halt_cleared', result, kind: h.kind });
    if (result === 'ok') this.o.log.warn({ run: run.name }, 'removed our .HALT: the trainer it addressed has exited (watch.auto-clear-halt)');
    ackMemory(mem, now, 'halt_removed');
    await this.audit(run, { ts: now, event: 'acknowledged', episode: h.episode, reason: 'halt_cleared' });
  }

  // Appends the batch's entries to the run's audit log in one write (one fdatasync).
  private async flush(run: RunRef, batch: Batch): Promise<void> {
    try {
      await batch.flush((es) => this.audit(run, ...es));
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      this.o.log.error({ run: run.name, err: err.message }, `cannot append to the audit log in ${run.dir}: ${fixFor(err)}`);
      throw e;
    }
  }

  // Appends entries to the run's audit log in one write (one fdatasync), then remembers them.
  private async audit(run: RunRef, ...es: AuditEntry[]): Promise<void> {
    const entries = es.map((e) => ({ ...e, iso: new Date(e.ts * 1000).toISOString(), run: run.name, by: this.o.by }));
    const mem = this.runs.get(run.real)?.mem;
    if (!this.o.readOnly) await appendAudit(this.auditLog, run, entries, mem, this.o);
    if (mem) for (const e of entries) remember(mem, e);
    for (const e of entries) {
      if (this.o.onEpisode && (e.event === 'anomaly' || e.event === 'resolved'))
        this.o.onEpisode({
          event: e.event === 'anomaly' ? 'opened' : 'resolved',
          run,
          episode: e.episode,
          kind: e.kind ?? '',
          rank: e.rank,
          message: e.message,
          source: e.source,
          ts: e.ts,
        });
    }
  }

  /** Records a notification's result (notify/notify.ts) as an action of its episode. */
  recordNotified(run: RunRef, episode: string, channel: string, result: string, event: string): Promise<void> {
    return this.serial(run, () => this.audit(run, { ts: Date.now() / 1000, event: 'action', episode, action: `notified_${channel}`, result, reason: event }));
  }

  /** Resolves once the run's current serialised step (its writes) is done. */
  settled(run: RunRef): Promise<void> {
    return this.serial(run, async () => undefined);
  }
}

/**
 * Audit entries decided in one serialised step, appended together: whenever a control file is
 * about to be written (its intent first), and at the end of the step. Remembers whose entries
 * (`owner`: the alert's index in a delivery) were in an append that failed.
 */
class Batch {
  owner = 0;
  readonly failed = new Map<number, Error>();
  private entries: AuditEntry[] = [];
  private owners: number[] = [];

  push(e: AuditEntry): void {
    this.entries.push(e);
    this.owners.push(this.owner);
  }

  async flush(write: (es: AuditEntry[]) => Promise<void>): Promise<void> {
    if (this.entries.length === 0) return;
    const es = this.entries;
    const owners = this.owners;
    this.entries = [];
    this.owners = [];
    try {
      await write(es);
    } catch (e) {
      for (const o of owners) this.failed.set(o, e as Error);
      throw e;
    }
  }
}

/**
 * Whether a regular .HALT file is there now. Read from disk, not from the watcher's view: that
 * trails our own write by an event, and it follows symlinks (as the trainer does), where a
 * planted symlink must not count as a halt that stops us writing one (files.ts replaces it).
 */
async function haltThere(run: RunRef): Promise<boolean> {
  try {
    return (await lstat(join(run.real, CONTROL_FILES.halt))).isFile();
  } catch {
    return false;
  }
}

/** The escalation signals, in order. */
const ESCALATION = ['SIGUSR1', 'SIGTERM', 'SIGKILL'] as const;

/** What .HALT holds: the trainer reads the kind from it. */
const haltLine = (kind: string) => `halt: ${kind}\n`;

function fixFor(e: NodeJS.ErrnoException): string {
  switch (e.code) {
    case 'EACCES':
    case 'EPERM':
      return 'permission denied: run trainwatch as a user that may write into the run directory';
    case 'EROFS':
      return 'the filesystem is read-only: mount the run directory read-write';
    case 'ENOSPC':
      return 'the disk is full: free space; trainwatch retries';
    case 'ENOENT':
      return 'the run directory is gone';
    default:
      return `${e.code ?? 'error'}; trainwatch retries`;
  }
}
