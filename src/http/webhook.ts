// Alertmanager webhook (payload version 4) → episodes through the actions module.
//
// A label is never used as a path: the `run` label is only looked up among the runs this
// trainwatch watches. Labels with separators, `..`, NUL or percent-encoding are rejected
// outright. Answers fit Alertmanager's retries: 2xx handled, 4xx never valid (not retried),
// 5xx a write failed (retried, and the de-duplication makes the retry safe).
//
// Serving: WebhookHttp answers a plain POST of JSON to exactly WEBHOOK_PATH straight from the
// node:http listener, without express (whose routing, body parser and res.json were half of
// the main thread at saturation). It keeps the express route's behaviour: enabled check,
// bearer or basic auth with WWW-Authenticate, the web config headers, 413 and 400 with the same
// messages, the request counter. Anything less plain (a content encoding, a path variant express
// also matches) is left to the express route, which does the same through the same checks.
//
// Cross-site requests: Alertmanager always sends `Content-Type: application/json` and never an
// Origin header. Only that type is accepted (415 otherwise): an HTML form can send only
// text/plain, urlencoded or multipart, and a page's script needs a CORS preflight for JSON, which
// trainwatch never grants. A browser marks every cross-origin POST with Origin (and
// Sec-Fetch-Site), so a request whose Origin is not this server itself is refused with 403 too.
// Both checks come before auth, so a cross-site page never costs a bcrypt comparison.
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { kindOf } from '../detect/kinds.js';
import type { AlertInput, RunRef } from '../actions/actions.js';
import type { Logger } from '../log.js';
import type { Watcher } from '../watch/watcher.js';
import { bearerMatches, type BasicAuth } from './webconfig.js';

/** The webhook path Alertmanager posts to. */
export const WEBHOOK_PATH = '/webhook/alertmanager';

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
const UNSAFE_LABEL = /[/\\\0]|\.\.|%2e|%2f|%5c|%00/i;

/** Handles one parsed webhook body. */
export async function handleWebhook(w: Watcher, body: unknown, opts: { instance?: string }): Promise<WebhookResponse> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return bad('body must be a JSON object (Alertmanager webhook payload)');
  const p = body as Record<string, unknown>;
  if (p.version !== '4') return bad(`unsupported payload version ${JSON.stringify(p.version)}; trainwatch accepts Alertmanager webhook version "4"`);
  if (!Array.isArray(p.alerts)) return bad('payload has no alerts array');
  const now = w.now();
  const results: AlertResult[] = [];
  // The alerts for runs watched here, per run: one step of that run's actions each, in order.
  const groups = new Map<string, { target: RunRef; at: number[]; inputs: AlertInput[] }>();
  for (const raw of p.alerts) {
    const c = classify(w, raw, opts);
    results.push(c.result);
    if (!c.act) continue;
    let g = groups.get(c.act.target.real);
    if (!g) groups.set(c.act.target.real, (g = { target: c.act.target, at: [], inputs: [] }));
    g.at.push(results.length - 1);
    g.inputs.push(c.act.input);
  }
  await Promise.all(
    [...groups.values()].map(async (g) => {
      const outcomes = await w.actions.alerts(g.target, g.inputs, now).catch((e: Error) => g.inputs.map(() => e));
      for (const [i, o] of outcomes.entries()) {
        const r = results[g.at[i]];
        if (o instanceof Error) Object.assign(r, { result: 'failed', error: o.message });
        else r.result = o;
      }
    }),
  );
  let failed = false;
  for (const r of results) {
    w.stats.webhookAlert(r.result);
    if (r.result === 'failed') failed = true;
  }
  if (failed) return { status: 500, body: { status: 'error', error: 'a control-file write failed; Alertmanager will retry', alerts: results } };
  return { status: 200, body: { status: 'ok', alerts: results } };
}

// What one alert is: answered already (not ours, rejected, unknown kind), or for a run here.
function classify(w: Watcher, raw: unknown, opts: { instance?: string }): { result: AlertResult; act?: { target: RunRef; input: AlertInput } } {
  if (typeof raw !== 'object' || raw === null) return { result: { result: 'rejected', error: 'alert is not an object' } };
  const a = raw as Record<string, unknown>;
  const labels = (typeof a.labels === 'object' && a.labels !== null ? a.labels : {}) as Record<string, unknown>;
  const run = labels.run;
  const kind = labels.anomaly_type;
  if (typeof run !== 'string' || run === '') return { result: { result: 'not_ours', error: 'no run label' } };
  if (UNSAFE_LABEL.test(run) || run.startsWith('.') || run.length > 512)
    return { result: { run: run.slice(0, 64), result: 'rejected', error: 'run label is not a plain run name' } };
  if (opts.instance && labels.instance !== undefined && labels.instance !== opts.instance)
    return { result: { run, result: 'not_ours', error: 'instance label is another trainwatch' } };
  const target = w.runByName(run);
  if (!target) return { result: { run, result: 'not_ours' } };
  if (typeof kind !== 'string' || !kindOf(kind)) return { result: { run, result: 'unknown_kind', error: 'anomaly_type label missing or unknown' } };
  const status = a.status === 'resolved' ? 'resolved' : 'firing';
  const startsAt = typeof a.startsAt === 'string' ? a.startsAt : '';
  const fingerprint = typeof a.fingerprint === 'string' && a.fingerprint !== '' ? a.fingerprint : labelHash(labels);
  const rank = Number(labels.rank);
  const annotations = (typeof a.annotations === 'object' && a.annotations !== null ? a.annotations : {}) as Record<string, unknown>;
  const message =
    typeof annotations.description === 'string'
      ? annotations.description
      : typeof annotations.summary === 'string'
        ? annotations.summary
        : typeof labels.alertname === 'string'
          ? labels.alertname
          : kind;
  const input: AlertInput = {
    key: `${fingerprint}@${startsAt}`,
    kind,
    status,
    halts: labels.halt === 'true',
    rank: Number.isInteger(rank) ? rank : undefined,
    message,
  };
  // `result` is a placeholder until the actions decide.
  return { result: { run, anomaly_type: kind, result: 'failed' }, act: { target, input } };
}

function labelHash(labels: Record<string, unknown>): string {
  const keys = Object.keys(labels).sort();
  return createHash('sha256')
    .update(keys.map((k) => `${k}=${String(labels[k])}`).join('\0'))
    .digest('hex')
    .slice(0, 16);
}

function bad(error: string): WebhookResponse {
  return { status: 400, body: { status: 'error', error } };
}

/** What the webhook's HTTP side needs from the server's settings. */
export interface WebhookHttpOptions {
  w: Watcher;
  log: Logger;
  /** the bearer token (--webhook.token-file) */
  token?: string;
  basic: BasicAuth;
  allowUnauthenticated: boolean;
  maxBodyBytes: number;
  instance?: string;
  /** http_server_config.headers of the web config, on every answer */
  headers: Record<string, string>;
}

/** A request the webhook turns away before reading its body. */
export interface Refusal {
  status: number;
  body: WebhookResponse['body'];
  /** extra headers: the WWW-Authenticate challenge of a 401, the Retry-After of a 503 */
  headers?: Record<string, string>;
}

/** The answer to a check that found BCRYPT_MAX_IN_FLIGHT password comparisons running (503). */
export const BUSY = 'too many password checks in progress; retry in a second';

/** The error of a body that could not be read or parsed, as both serving paths report it. */
export function bodyError(kind: 'too_large' | 'bad_json', maxBodyBytes: number): string {
  return kind === 'too_large' ? `body larger than --webhook.max-body-bytes (${maxBodyBytes})` : 'body is not valid JSON';
}

/** `application/json` with at most a UTF-8 charset: Alertmanager's type, and one no HTML form can send. */
const JSON_TYPE = /^application\/json\s*(;\s*charset\s*=\s*("?)utf-8\2\s*)?$/i;

/** Why a request's Content-Type is refused (415), or undefined if it is JSON. */
export function contentTypeError(type: string | undefined): string | undefined {
  if (JSON_TYPE.test(type ?? '')) return undefined;
  if (type === undefined) return 'no Content-Type; send Content-Type: application/json (as Alertmanager does)';
  if (/^application\/json\s*;/i.test(type)) return `Content-Type ${JSON.stringify(type.slice(0, 100))}: only a charset of utf-8 is accepted`;
  return `Content-Type ${JSON.stringify(type.slice(0, 100))} is not accepted; send application/json (as Alertmanager does)`;
}

/** Why a request is a browser's cross-origin one (403), or undefined: Alertmanager sends no Origin. */
export function crossOriginError(h: IncomingHttpHeaders, secure: boolean): string | undefined {
  const self = `${secure ? 'https' : 'http'}://${h.host ?? ''}`.toLowerCase();
  if (h.origin !== undefined && h.origin.toLowerCase() !== self)
    return `cross-origin request (Origin ${JSON.stringify(h.origin.slice(0, 100))}) refused; the webhook is for Alertmanager, which sends no Origin`;
  const site = h['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none')
    return `cross-site request (Sec-Fetch-Site: ${JSON.stringify(site.slice(0, 30))}) refused; the webhook is for Alertmanager`;
  return undefined;
}

/** The webhook's HTTP side: who may post, and the fast path. */
export class WebhookHttp {
  readonly enabled: boolean;

  constructor(private readonly o: WebhookHttpOptions) {
    this.enabled = o.token !== undefined || o.basic.enabled || o.allowUnauthenticated;
  }

  /** Why a request with these headers may not post, or undefined if it may; `secure`: it came over TLS. */
  async refusal(h: IncomingHttpHeaders, secure: boolean): Promise<Refusal | undefined> {
    const { token, basic } = this.o;
    const authorization = h.authorization;
    if (!this.enabled)
      return {
        status: 403,
        body: { status: 'error', error: 'webhook disabled: configure --webhook.token-file or basic_auth_users, or pass --webhook.allow-unauthenticated' },
      };
    const cross = crossOriginError(h, secure);
    if (cross) return { status: 403, body: { status: 'error', error: cross } };
    const type = contentTypeError(h['content-type']);
    if (type) return { status: 415, body: { status: 'error', error: type } };
    if (token === undefined && !basic.enabled) return undefined;
    if (token !== undefined && bearerMatches(authorization, token)) return undefined;
    const verdict = basic.enabled ? await basic.check(authorization) : 'wrong';
    if (verdict === 'ok') return undefined;
    if (verdict === 'busy') return { status: 503, body: { status: 'error', error: BUSY }, headers: { 'Retry-After': '1' } };
    return {
      status: 401,
      body: { status: 'error', error: 'unauthorized' },
      headers: { 'WWW-Authenticate': token !== undefined ? 'Bearer' : 'Basic realm="trainwatch"' },
    };
  }

  /**
   * Serves `req` if it is a POST to exactly WEBHOOK_PATH (any query string) whose body is plain
   * JSON; returns false, having touched nothing, for every other request.
   */
  serve(req: IncomingMessage, res: ServerResponse): boolean {
    if (req.method !== 'POST') return false;
    const url = req.url ?? '';
    const q = url.indexOf('?');
    if ((q < 0 ? url : url.slice(0, q)) !== WEBHOOK_PATH || !identity(req.headers)) return false;
    void this.refusal(req.headers, isTls(req)).then((no) => (no ? this.send(res, no.status, no.body, no.headers) : this.readAndHandle(req, res)));
    return true;
  }

  /** Answers with JSON, the web config headers and the request counted. */
  private send(res: ServerResponse, status: number, body: unknown, extra?: Record<string, string>): void {
    this.o.w.stats.webhookRequest(status);
    const json = JSON.stringify(body);
    const headers: Record<string, string | number> = { ...this.o.headers, ...extra };
    headers['Content-Type'] = 'application/json; charset=utf-8';
    headers['Content-Length'] = Buffer.byteLength(json);
    res.writeHead(status, headers);
    res.end(json);
  }

  private async readAndHandle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { w, log, maxBodyBytes } = this.o;
    let body: unknown;
    // Like express.json: no body at all is `undefined`, an empty one `{}`.
    if (req.headers['transfer-encoding'] !== undefined || !Number.isNaN(Number(req.headers['content-length']))) {
      const read = await readBody(req, maxBodyBytes);
      if ('error' in read)
        return this.send(res, read.error === 'too_large' ? 413 : 400, {
          status: 'error',
          error: read.error === 'too_large' ? bodyError('too_large', maxBodyBytes) : 'request aborted',
        });
      const text = read.text.charCodeAt(0) === 0xfeff ? read.text.slice(1) : read.text;
      try {
        body = text.length === 0 ? {} : JSON.parse(text);
      } catch {
        return this.send(res, 400, { status: 'error', error: bodyError('bad_json', maxBodyBytes) });
      }
    }
    try {
      const out = await handleWebhook(w, body, { instance: this.o.instance });
      if (out.status >= 400) log.warn({ status: out.status, error: out.body.error }, 'webhook request not handled');
      this.send(res, out.status, out.body);
    } catch (e) {
      log.error({ err: (e as Error).message, path: WEBHOOK_PATH }, 'request failed');
      this.send(res, 500, { status: 'error', error: 'internal error' });
    }
  }
}

// Whether the fast path can read this body as express.json would without its decoders.
function identity(h: IncomingHttpHeaders): boolean {
  const enc = h['content-encoding'];
  return enc === undefined || enc.toLowerCase() === 'identity';
}

/** Whether a request came over TLS. */
export function isTls(req: IncomingMessage): boolean {
  return (req.socket as { encrypted?: boolean }).encrypted === true;
}

/**
 * Reads a request body of at most `limit` bytes. Like express's body parser, a body over the
 * limit (declared or counted) is read off to its end before the answer, so the connection stays
 * usable; the server's request timeout still cuts off a body that comes too slowly.
 */
function readBody(req: IncomingMessage, limit: number): Promise<{ text: string } | { error: 'too_large' | 'aborted' }> {
  return new Promise((resolve) => {
    // Closed while its credentials were checked: 'close' has fired already.
    if (req.destroyed) return resolve({ error: 'aborted' });
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = Number(req.headers['content-length']) > limit;
    let ended = false;
    req.on('data', (c: Buffer) => {
      if (tooLarge) return;
      size += c.length;
      if (size > limit) {
        tooLarge = true;
        chunks.length = 0;
      } else chunks.push(c);
    });
    req.on('end', () => {
      ended = true;
      resolve(tooLarge ? { error: 'too_large' } : { text: Buffer.concat(chunks, size).toString('utf8') });
    });
    // Cut off (client gone, request timeout): answered like express's 'request aborted'.
    req.on('error', () => undefined);
    req.on('close', () => {
      if (!ended) resolve({ error: 'aborted' });
    });
  });
}
