// Notifications: a command (--notify.exec) and webhooks (--notify.webhook) told once when an
// episode opens (and, with --notify.on-resolve, when it ends). The actions module calls
// `episode()` once the opening or end is in the audit log; a restarted trainwatch continues
// open episodes from that log without opening them again, so each fires once per episode
// across restarts. Nothing here is awaited by detection or the halt: an event waits for the
// run's current step (so .HALT, if any, is written) and then goes into a bounded queue per
// channel that drops its oldest entry when full. Each result is counted
// (trainwatch_notifications_total) and recorded in the audit log as `notified_<channel>`.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Actions, EpisodeEvent } from '../actions/actions.js';
import { CONTROL_FILES } from '../actions/files.js';
import { ConfigError } from '../config/load.js';
import type { Config } from '../config/settings.js';
import { kindOf } from '../detect/kinds.js';
import type { Logger } from '../log.js';
import type { Stats } from '../watch/stats.js';

/** What a notification says: the environment of the command, the body of the webhook. */
export interface Notice {
  event: 'opened' | 'resolved';
  run: string;
  dir: string;
  kind: string;
  rank: number | null;
  message: string;
  severity: string;
  /** .HALT is in the run directory once the episode's actions are done */
  halted: boolean;
  /** the run's state as of the event: anomalous or halt_requested on opening, the state after it on resolving */
  state: string;
  episode: string;
  /** Unix seconds */
  ts: number;
  host: string;
}

/** The longest a retry waits. */
const MAX_BACKOFF_MS = 300_000;
/** Output of a command logged per stream, at most. */
const MAX_OUTPUT_BYTES = 4096;

/** Splits a command line into words: whitespace separates, '…' and "…" quote, \ escapes outside single quotes. */
export function splitCommand(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  let q: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (q) {
      if (c === q) q = undefined;
      else if (c === '\\' && q === '"' && i + 1 < line.length) cur += line[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      q = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < line.length) {
      cur += line[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) out.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (q) throw new ConfigError(`--notify.exec: unterminated ${q} quote in ${JSON.stringify(line)}`);
  if (inWord) out.push(cur);
  return out;
}

/** The command's environment variables for a notice. */
export function noticeEnv(n: Notice): Record<string, string> {
  return {
    TRAINWATCH_EVENT: n.event,
    TRAINWATCH_RUN: n.run,
    TRAINWATCH_DIR: n.dir,
    TRAINWATCH_KIND: n.kind,
    TRAINWATCH_RANK: n.rank === null ? '' : String(n.rank),
    TRAINWATCH_MESSAGE: n.message,
    TRAINWATCH_SEVERITY: n.severity,
    TRAINWATCH_HALTED: n.halted ? '1' : '0',
    TRAINWATCH_STATE: n.state,
    TRAINWATCH_EPISODE: n.episode,
  };
}

/** The webhook body for a notice in the chosen format. */
export function webhookBody(n: Notice, format: 'json' | 'slack'): string {
  if (format === 'json') return JSON.stringify({ version: 1, ...n });
  const what =
    n.event === 'opened'
      ? `${n.severity === 'critical' ? ':rotating_light:' : ':warning:'} ${n.kind} on run ${n.run}${n.rank === null ? '' : ` rank ${n.rank}`}`
      : `:white_check_mark: ${n.kind} on run ${n.run} resolved`;
  return JSON.stringify({ text: `${what} (${n.host}): ${n.message}${n.halted ? ' — .HALT written' : ''} [${n.state}]` });
}

/** A queue that holds at most `max` items, dropping the oldest. */
class BoundedQueue<T> {
  private items: T[] = [];
  constructor(
    private readonly max: number,
    private readonly onDrop: (item: T) => void,
  ) {}
  push(item: T): void {
    this.items.push(item);
    while (this.items.length > this.max) this.onDrop(this.items.shift()!);
  }
  shift(): T | undefined {
    return this.items.shift();
  }
  get size(): number {
    return this.items.length;
  }
}

interface Job {
  notice: Notice;
  ev: EpisodeEvent;
}

/** Sends notifications for episodes; see the header. */
export class Notifier {
  private readonly argv: string[] | undefined;
  private readonly token: string | undefined;
  private readonly execQueue: BoundedQueue<Job>;
  private readonly hooks: Array<{ url: string; queue: BoundedQueue<Job>; busy: boolean }>;
  private running = 0;
  private stopped = false;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly c: Config,
    private readonly log: Logger,
    private readonly stats: Stats,
    private readonly actions: () => Actions,
    /** the run's lifecycle state now, for resolve notices */
    private readonly stateOf: (real: string) => string | undefined,
  ) {
    const cmd = c['notify.exec'];
    if (cmd !== undefined && cmd.trim() === '') throw new ConfigError('--notify.exec: empty command');
    this.argv = cmd === undefined ? undefined : c['notify.shell'] ? ['/bin/sh', '-c', cmd] : splitCommand(cmd);
    for (const url of c['notify.webhook']) {
      let u: URL;
      try {
        u = new URL(url);
      } catch {
        throw new ConfigError(`--notify.webhook: ${JSON.stringify(url)} is not a URL; give e.g. https://hooks.example.com/trainwatch`);
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigError(`--notify.webhook: ${url}: only http and https URLs are supported`);
      if (u.username || u.password)
        throw new ConfigError(`--notify.webhook: ${u.host}: credentials do not belong in the URL; put a bearer token in --notify.webhook-token-file`);
    }
    const tf = c['notify.webhook-token-file'];
    if (tf !== undefined) {
      try {
        this.token = readFileSync(tf, 'utf8').trim();
      } catch (e) {
        throw new ConfigError(`--notify.webhook-token-file: cannot read ${tf}: ${(e as Error).message}`);
      }
      if (this.token === '') throw new ConfigError(`--notify.webhook-token-file: ${tf} is empty; put the bearer token in it`);
    }
    const drop = (channel: string) => (j: Job) => {
      this.stats.notification(channel, 'dropped');
      this.log.warn({ run: j.notice.run, anomaly: j.notice.kind, channel }, `notification dropped: more than ${c['notify.queue']} waiting (notify.queue)`);
      this.record(j, channel, 'dropped');
    };
    this.execQueue = new BoundedQueue(c['notify.queue'], drop('exec'));
    this.hooks = c['notify.webhook'].map((url) => ({ url, queue: new BoundedQueue<Job>(c['notify.queue'], drop('webhook')), busy: false }));
  }

  /** Whether any channel is configured. */
  get enabled(): boolean {
    return this.argv !== undefined || this.hooks.length > 0;
  }

  /** The actions module's hook: never throws, never blocks the caller. */
  episode(ev: EpisodeEvent): void {
    if (this.stopped || (ev.event === 'resolved' && !this.c['notify.on-resolve'])) return;
    void this.prepare(ev).catch((e: unknown) => this.log.error({ err: String(e) }, 'notification failed'));
  }

  /** Stops: nothing new starts, retries are abandoned; running commands are left to their timeout. */
  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private async prepare(ev: EpisodeEvent): Promise<void> {
    // After the run's current step: .HALT, if this episode writes one, is there now.
    await this.actions().settled(ev.run);
    const halted = await lstat(join(ev.run.real, CONTROL_FILES.halt)).then(
      () => true,
      () => false,
    );
    const k = kindOf(ev.kind);
    const notice: Notice = {
      event: ev.event,
      run: ev.run.name,
      dir: ev.run.dir,
      kind: ev.kind,
      rank: ev.rank ?? null,
      message: ev.message ?? (ev.event === 'resolved' ? `${ev.kind} is no longer detected` : ev.kind),
      severity: k?.severity ?? 'warning',
      halted,
      state: ev.event === 'opened' ? (halted ? 'halt_requested' : 'anomalous') : (this.stateOf(ev.run.real) ?? 'unknown'),
      episode: ev.episode,
      ts: ev.ts,
      host: hostname(),
    };
    const job = { notice, ev };
    if (this.argv) {
      this.execQueue.push(job);
      this.pumpExec();
    }
    for (const h of this.hooks) {
      h.queue.push(job);
      void this.pumpHook(h);
    }
  }

  private record(j: Job, channel: string, result: string): void {
    void this.actions()
      .recordNotified(j.ev.run, j.ev.episode, channel, result, j.ev.event)
      .catch(() => undefined); // the append's failure is logged by the actions module
  }

  private pumpExec(): void {
    while (!this.stopped && this.running < this.c['notify.exec-concurrency']) {
      const j = this.execQueue.shift();
      if (!j) return;
      this.running++;
      void this.exec(j).finally(() => {
        this.running--;
        this.pumpExec();
      });
    }
  }

  private exec(j: Job): Promise<void> {
    const [file, ...args] = this.argv!;
    const n = j.notice;
    const fields = { run: n.run, anomaly: n.kind, event: n.event };
    return new Promise<void>((resolve) => {
      let done = false;
      const finish = (result: string, detail: Record<string, unknown>) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.stats.notification('exec', result);
        if (result === 'ok') this.log.info({ ...fields, ...detail }, 'notification command done');
        else
          this.log.warn(
            { ...fields, ...detail },
            `notification command ${result === 'timeout' ? `killed after --notify.exec-timeout-s ${this.c['notify.exec-timeout-s']}s` : 'failed'}`,
          );
        this.record(j, 'exec', result);
        resolve();
      };
      // Its own process group, so that a timeout kills what it started too (a shell's children).
      const child = spawn(file, args, { env: { ...process.env, ...noticeEnv(n) }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      const timer = setTimeout(() => {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // gone already
        }
        finish('timeout', {});
      }, this.c['notify.exec-timeout-s'] * 1000);
      for (const [name, stream] of [
        ['stdout', child.stdout],
        ['stderr', child.stderr],
      ] as const) {
        let got = 0;
        let buf = '';
        stream.on('data', (d: Buffer) => {
          if (got >= MAX_OUTPUT_BYTES) return;
          buf += d.subarray(0, MAX_OUTPUT_BYTES - got).toString('utf8');
          got += d.length;
        });
        stream.on('end', () => {
          for (const line of buf.split('\n')) if (line !== '') this.log.info({ ...fields, stream: name }, line);
          if (got > MAX_OUTPUT_BYTES) this.log.info({ ...fields, stream: name }, `(output cut at ${MAX_OUTPUT_BYTES} bytes)`);
        });
      }
      child.on('error', (e) => finish('failed', { err: e.message }));
      child.on('exit', (code, signal) => finish(code === 0 ? 'ok' : 'failed', { code, signal }));
    });
  }

  private async pumpHook(h: { url: string; queue: BoundedQueue<Job>; busy: boolean }): Promise<void> {
    if (h.busy) return;
    h.busy = true;
    try {
      for (let j = h.queue.shift(); j && !this.stopped; j = h.queue.shift()) await this.deliver(h.url, j);
    } finally {
      h.busy = false;
    }
  }

  // One delivery, in order per URL: 2xx done; 5xx or no answer retried with backoff; else failed.
  private async deliver(url: string, j: Job): Promise<void> {
    const body = webhookBody(j.notice, this.c['notify.webhook-format']);
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'trainwatch' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const host = new URL(url).host; // never log the path: Slack-style URLs carry their secret there
    for (let attempt = 0; ; attempt++) {
      let status: number | undefined;
      let err: string | undefined;
      try {
        const r = await fetch(url, { method: 'POST', headers, body, signal: AbortSignal.timeout(this.c['notify.webhook-timeout-s'] * 1000) });
        status = r.status;
        await r.body?.cancel();
      } catch (e) {
        err = (e as Error).message;
      }
      if (status !== undefined && status >= 200 && status < 300) {
        this.stats.notification('webhook', 'ok');
        this.log.info({ run: j.notice.run, anomaly: j.notice.kind, host, status, attempt }, 'notification delivered');
        this.record(j, 'webhook', 'ok');
        return;
      }
      const retry = (status === undefined || status >= 500) && attempt < this.c['notify.webhook-retries'] && !this.stopped;
      if (!retry) {
        this.stats.notification('webhook', 'failed');
        this.log.warn(
          { run: j.notice.run, anomaly: j.notice.kind, host, status, err, attempts: attempt + 1 },
          status !== undefined && status < 500
            ? 'notification webhook refused the event (not retried)'
            : 'notification webhook failed after its retries (notify.webhook-retries)',
        );
        this.record(j, 'webhook', 'failed');
        return;
      }
      this.stats.notification('webhook', 'retry');
      const wait = Math.min(MAX_BACKOFF_MS, this.c['notify.webhook-backoff-s'] * 1000 * 2 ** attempt);
      await new Promise<void>((r) => {
        const t = setTimeout(() => {
          this.timers.delete(t);
          r();
        }, wait);
        this.timers.add(t);
      });
    }
  }
}
