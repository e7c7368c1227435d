// Alertmanager webhook (payload version 4) → episodes through the actions module.
//
// A label is never used as a path: the `run` label is only looked up among the runs this
// trainwatch watches. Labels with separators, `..`, NUL or percent-encoding are rejected
// outright. Answers fit Alertmanager's retries: 2xx handled, 4xx never valid (not retried),
// 5xx a write failed (retried, and the de-duplication makes the retry safe).
import { createHash } from 'node:crypto';
import { kindOf } from '../detect/kinds.js';
import type { Watcher } from '../watch/watcher.js';

/** Outcome of one alert of a payload. */
export interface AlertResult {
  run?: string;
  anomaly_type?: string;
  result: 'acted' | 'joined' | 'duplicate' | 'resolved' | 'resolved_duplicate' | 'not_ours' | 'unknown_kind' | 'rejected' | 'failed';
  error?: string;
}

/** What the HTTP layer answers. */
export interface WebhookResponse {
  status: number;
  body: { status: string; error?: string; alerts?: AlertResult[] };
}

/** Characters and sequences that have no business in a run label. */
const UNSAFE_LABEL = /[\/\\\0]|\.\.|%2e|%2f|%5c|%00/i;

/** Handles one parsed webhook body. */
export async function handleWebhook(w: Watcher, body: unknown, opts: { instance?: string }): Promise<WebhookResponse> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return bad('body must be a JSON object (Alertmanager webhook payload)');
  const p = body as Record<string, unknown>;
  if (p.version !== '4') return bad(`unsupported payload version ${JSON.stringify(p.version)}; trainwatch accepts Alertmanager webhook version "4"`);
  if (!Array.isArray(p.alerts)) return bad('payload has no alerts array');
  const results: AlertResult[] = [];
  let failed = false;
  const now = w.now();
  for (const raw of p.alerts) {
    const r = await handleAlert(w, raw, opts, now);
    w.stats.webhookAlert(r.result);
    if (r.result === 'failed') failed = true;
    results.push(r);
  }
  if (failed) return { status: 500, body: { status: 'error', error: 'a control-file write failed; Alertmanager will retry', alerts: results } };
  return { status: 200, body: { status: 'ok', alerts: results } };
}

async function handleAlert(w: Watcher, raw: unknown, opts: { instance?: string }, now: number): Promise<AlertResult> {
  if (typeof raw !== 'object' || raw === null) return { result: 'rejected', error: 'alert is not an object' };
  const a = raw as Record<string, unknown>;
  const labels = (typeof a.labels === 'object' && a.labels !== null ? a.labels : {}) as Record<string, unknown>;
  const run = labels.run;
  const kind = labels.anomaly_type;
  if (typeof run !== 'string' || run === '') return { result: 'not_ours', error: 'no run label' };
  if (UNSAFE_LABEL.test(run) || run.startsWith('.') || run.length > 512) return { run: run.slice(0, 64), result: 'rejected', error: 'run label is not a plain run name' };
  if (opts.instance && labels.instance !== undefined && labels.instance !== opts.instance) return { run, result: 'not_ours', error: 'instance label is another trainwatch' };
  const target = w.runByName(run);
  if (!target) return { run, result: 'not_ours' };
  if (typeof kind !== 'string' || !kindOf(kind)) return { run, result: 'unknown_kind', error: 'anomaly_type label missing or unknown' };
  const status = a.status === 'resolved' ? 'resolved' : 'firing';
  const startsAt = typeof a.startsAt === 'string' ? a.startsAt : '';
  const fingerprint = typeof a.fingerprint === 'string' && a.fingerprint !== '' ? a.fingerprint : labelHash(labels);
  const rank = Number(labels.rank);
  const annotations = (typeof a.annotations === 'object' && a.annotations !== null ? a.annotations : {}) as Record<string, unknown>;
  const message = typeof annotations.description === 'string' ? annotations.description : typeof annotations.summary === 'string' ? annotations.summary : `${labels.alertname ?? kind}`;
  try {
    const result = await w.actions.alert(
      target,
      { key: `${fingerprint}@${startsAt}`, kind, status, halts: labels.halt === 'true', rank: Number.isInteger(rank) ? rank : undefined, message },
      now,
    );
    return { run, anomaly_type: kind, result };
  } catch (e) {
    return { run, anomaly_type: kind, result: 'failed', error: (e as Error).message };
  }
}

function labelHash(labels: Record<string, unknown>): string {
  const keys = Object.keys(labels).sort();
  return createHash('sha256').update(keys.map((k) => `${k}=${String(labels[k])}`).join('\0')).digest('hex').slice(0, 16);
}

function bad(error: string): WebhookResponse {
  return { status: 400, body: { status: 'error', error } };
}
