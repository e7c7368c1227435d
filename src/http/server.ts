// The HTTP server: /metrics, the status page, its JSON API, health endpoints and the
// Alertmanager webhook, behind the exporter-toolkit auth and TLS settings.
import { createServer as createHttp, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttps } from 'node:https';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import express, { type NextFunction, type Request, type Response } from 'express';
import { ConfigError, readSettingFile } from '../config/load.js';
import type { Logger } from '../log.js';
import { defaultMetrics } from '../metrics/defaults.js';
import { renderMetrics } from '../metrics/render.js';
import { sendExposition } from '../metrics/send.js';
import type { Watcher } from '../watch/watcher.js';
import { statusJson } from './status.js';
import { docHtml, DOCS_DIR, DOCS_PATH, docsIndexHtml, loadDocs } from './docs.js';
import { PAGE_CSP, statusPageHtml } from './page.js';
import { bodyError, BUSY, handleWebhook, isTls, WEBHOOK_PATH, WebhookHttp } from './webhook.js';
import { HttpStats } from './stats.js';
import { BasicAuth, clientCertRefusal, loadWebConfig } from './webconfig.js';

export { WEBHOOK_PATH };

/** The listen address is taken (main.ts then asks who holds it: http/peer.ts). */
export class AddressInUseError extends ConfigError {}

/** A started server and how to stop it. */
export interface Started {
  server: Server;
  port: number;
  close(): Promise<void>;
}

/** Builds the express app and starts listening on --web.listen-address. */
/** Sent on every answer unless http_server_config.headers sets the same name (the status page gets PAGE_CSP instead). */
export const DEFAULT_HEADERS: Readonly<Record<string, string>> = {
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'",
};

export async function startServer(w: Watcher, log: Logger, version: string): Promise<Started> {
  const c = w.config;
  const webConfig = loadWebConfig(c['web.config.file']);
  const httpStats = new HttpStats();
  const basic = new BasicAuth(webConfig.basicAuthUsers, httpStats);
  let token: string | undefined;
  if (c['webhook.token-file']) {
    token = readSettingFile(c['webhook.token-file'], '--webhook.token-file').toString('utf8').trim();
    if (token === '') throw new ConfigError(`--webhook.token-file: ${c['webhook.token-file']} is empty; put the bearer token Alertmanager sends in it`);
  }
  const webhook = new WebhookHttp({
    w,
    log,
    token,
    basic,
    allowUnauthenticated: c['webhook.allow-unauthenticated'],
    maxBodyBytes: c['webhook.max-body-bytes'],
    instance: c['webhook.instance'],
    headers: webConfig.headers,
  });
  // Only mode alertmanager needs the webhook; in embedded mode its absence is the normal case.
  if (!webhook.enabled)
    log[c.mode === 'alertmanager' ? 'warn' : 'debug'](
      `webhook ${WEBHOOK_PATH} is disabled: no auth is configured. Set --webhook.token-file (or basic_auth_users in --web.config.file), or --webhook.allow-unauthenticated`,
    );
  else if (token === undefined && !basic.enabled) log.warn(`webhook ${WEBHOOK_PATH} accepts unauthenticated requests (--webhook.allow-unauthenticated)`);

  const registry = defaultMetrics();

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // Security headers on by default (no sniffing, no framing); http_server_config.headers override them.
  const configured = new Set(Object.keys(webConfig.headers).map((k) => k.toLowerCase()));
  app.use((_req, res, next) => {
    for (const [k, v] of Object.entries(DEFAULT_HEADERS)) res.setHeader(k, v);
    for (const [k, v] of Object.entries(webConfig.headers)) res.setHeader(k, v);
    next();
  });
  // Basic auth guards everything except the webhook, which also takes its bearer token, and
  // the health endpoints, which reveal nothing and must answer probes that carry no credentials.
  const open = new Set([WEBHOOK_PATH, '/healthz', '/readyz']);
  app.use((req: Request, res: Response, next: NextFunction) => {
    if (!basic.enabled || open.has(req.path)) return next();
    void basic.check(req.headers.authorization).then((verdict) => {
      if (verdict === 'ok') return next();
      if (verdict === 'busy')
        return void res
          .status(503)
          .setHeader('Retry-After', '1')
          .type('text/plain')
          .send(BUSY + '\n');
      res.setHeader('WWW-Authenticate', 'Basic realm="trainwatch"');
      res.status(401).type('text/plain').send('Unauthorized\n');
    });
  });

  app.get(c['web.telemetry-path'], async (req, res) => {
    await sendExposition(
      req,
      res,
      (sink) => renderMetrics(w, w.now(), version, sink, httpStats),
      () => registry.metrics(),
    );
  });
  app.get('/healthz', (_req, res) => {
    res.type('text/plain').send('ok\n');
  });
  app.get('/readyz', (_req, res) => {
    res
      .status(w.ready ? 200 : 503)
      .type('text/plain')
      .send(w.ready ? 'ready\n' : 'starting: reading existing heartbeat files\n');
  });
  app.get('/api/status', (_req, res) => {
    res.json(statusJson(w, w.now(), version));
  });
  app.get('/', (req, res) => {
    if (!configured.has('content-security-policy')) res.setHeader('Content-Security-Policy', PAGE_CSP);
    res.type('html').send(statusPageHtml(version, c['web.telemetry-path'], statusJson(w, w.now(), version), req.query.state));
  });

  // The shipped docs, read-only: the alert rules' runbook_url links land on /docs/runbook.
  const docs = loadDocs();
  if (!docs.has('runbook')) log.warn({ dir: DOCS_DIR }, `docs/runbook.md not found: ${DOCS_PATH}/runbook, where the alerts' runbook links point, answers 404`);
  app.get(DOCS_PATH, (req, res) => {
    if (!req.path.endsWith('/')) return res.redirect('docs/');
    res.type('html').send(docsIndexHtml(docs));
  });
  app.get(`${DOCS_PATH}/:file`, (req: Request<{ file: string }>, res: Response, next: NextFunction) => {
    const file = req.params.file;
    const name = file.replace(/\.md$/, '');
    if (!docs.has(name)) return next();
    // /docs/runbook/ would break the documents' relative links to each other.
    if (req.path.endsWith('/')) return res.redirect(`../${file}`);
    if (name !== file) res.type('text/markdown; charset=utf-8').send(docs.get(name));
    else res.type('html').send(docHtml(name, docs));
  });

  app.post(
    WEBHOOK_PATH,
    (req: Request, res: Response, next: NextFunction) => {
      void webhook.refusal(req.headers, isTls(req)).then((no) => {
        if (!no) return next();
        for (const [k, v] of Object.entries(no.headers ?? {})) res.setHeader(k, v);
        reply(res, no.status, no.body);
      });
    },
    express.json({ limit: c['webhook.max-body-bytes'], type: () => true, strict: false }),
    async (req: Request, res: Response) => {
      const out = await handleWebhook(w, req.body, { instance: c['webhook.instance'] });
      if (out.status >= 400) log.warn({ status: out.status, error: out.body.error }, 'webhook request not handled');
      reply(res, out.status, out.body);
    },
  );
  app.use((req: Request, res: Response) => {
    res.status(404).type('text/plain').send(`Not found: ${req.path}. Try / or ${c['web.telemetry-path']}\n`);
  });
  // Body parser errors (too large, malformed JSON, aborted) become 4xx, never a stack trace.
  app.use((err: Error & { status?: number; type?: string }, req: Request, res: Response, _next: NextFunction) => {
    const status = err.status && err.status >= 400 && err.status < 600 ? err.status : 500;
    const error =
      err.type === 'entity.too.large'
        ? bodyError('too_large', c['webhook.max-body-bytes'])
        : err.type === 'entity.parse.failed'
          ? bodyError('bad_json', c['webhook.max-body-bytes'])
          : status === 500
            ? 'internal error'
            : err.message;
    if (status === 500) log.error({ err: err.message, path: req.path }, 'request failed');
    if (req.path === WEBHOOK_PATH) reply(res, status, { status: 'error', error });
    else
      res
        .status(status)
        .type('text/plain')
        .send(error + '\n');
  });

  // Slow or stalled bodies must not hold a connection forever; check often enough to notice.
  const timeoutMs = c['web.request-timeout-s'] * 1000;
  const serverOpts = {
    requestTimeout: timeoutMs,
    headersTimeout: Math.min(timeoutMs, 10_000),
    connectionsCheckingInterval: Math.min(1000, timeoutMs / 2),
    keepAliveTimeout: c['web.keep-alive-timeout-s'] * 1000,
  };
  // The webhook's plain requests skip express (see WebhookHttp); everything else is the app's.
  const listener = (req: IncomingMessage, res: ServerResponse) => {
    if (!webhook.serve(req, res)) app(req, res);
  };
  const server = webConfig.tls ? createHttps({ ...webConfig.tls, ...serverOpts }, listener) : createHttp(serverOpts, listener);
  // Every connection holds a descriptor, as do tails and control-file writes: cap them.
  server.maxConnections = c['web.max-connections'];
  server.on('connection', (socket: Socket) => {
    httpStats.connections++;
    socket.once('close', () => httpStats.connections--);
  });
  let warned = false;
  server.on('drop', (d?: { remoteAddress?: string }) => {
    httpStats.refuse('max_connections');
    if (warned) return;
    warned = true;
    log.warn(
      { max: server.maxConnections, remote: d?.remoteAddress },
      'connection refused: --web.max-connections are open (logged once; counted in trainwatch_http_connections_refused_total). Raise --web.max-connections, or find the client holding them',
    );
  });
  const tls = webConfig.tls;
  if (tls) {
    // Runs after the http listener attached its parser but before any request is read.
    server.on('secureConnection', (socket: TLSSocket) => {
      const why = clientCertRefusal(tls.clientAuth, socket);
      if (!why) return;
      httpStats.refuse('client_cert');
      log.debug({ remote: socket.remoteAddress, reason: why }, 'TLS connection refused');
      socket.destroy();
    });
    // Handshakes that failed, RequireAndVerifyClientCert's refusals among them.
    server.on('tlsClientError', (e: Error) => {
      httpStats.refuse('tls_handshake');
      log.debug({ err: e.message }, 'TLS handshake failed');
    });
  }
  const addr = c['web.listen-address'];
  const cut = addr.lastIndexOf(':');
  const host = addr.slice(0, cut).replace(/^\[|\]$/g, '') || undefined;
  const port = Number(addr.slice(cut + 1));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        e.code === 'EADDRINUSE'
          ? new AddressInUseError(`--web.listen-address ${addr}: the port is in use; pick another port (e.g. --web.listen-address=:0 for any free one)`)
          : new ConfigError(`--web.listen-address ${addr}: ${e.message}`),
      ),
    );
    server.listen(port, host, () => resolve());
  });
  const bound = (server.address() as { port: number }).port;
  return {
    server,
    port: bound,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      });
      await basic.close();
    },
  };

  function reply(res: Response, status: number, body: unknown): void {
    w.stats.webhookRequest(status);
    res.status(status).json(body);
  }
}
