// The exporter-toolkit web config file (--web.config.file), as every Go exporter reads it:
// tls_server_config, basic_auth_users (bcrypt hashes) and http_server_config.headers. Unknown
// keys are errors, as in exporter-toolkit (it unmarshals strictly).
import { validateHeaderName, validateHeaderValue } from 'node:http';
import { dirname, resolve } from 'node:path';
import type { SecureVersion, TLSSocket } from 'node:tls';
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import bcrypt from 'bcryptjs';
import { parse as parseYaml } from 'yaml';
import { ConfigError, readSettingFile } from '../config/load.js';
import type { BcryptRequest } from './bcrypt-worker.js';
import { HttpStats } from './stats.js';

/** exporter-toolkit's client_auth_type values (Go's tls.ClientAuthType), and RequireClientCert, its old alias. */
export const CLIENT_AUTH_TYPES = [
  'NoClientCert',
  'RequestClientCert',
  'RequireAnyClientCert',
  'VerifyClientCertIfGiven',
  'RequireAndVerifyClientCert',
] as const;
/** How the server treats client certificates. */
export type ClientAuthType = (typeof CLIENT_AUTH_TYPES)[number];

/** TLS settings for https.createServer, plus the client certificate policy checked after the handshake. */
export interface TlsSettings {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
  requestCert: boolean;
  rejectUnauthorized: boolean;
  minVersion: SecureVersion;
  maxVersion: SecureVersion;
  honorCipherOrder: boolean;
  clientAuth: ClientAuthType;
}

/** The parsed web config. */
export interface WebConfig {
  tls?: TlsSettings;
  basicAuthUsers: Map<string, string>;
  headers: Record<string, string>;
}

const VERSIONS: Record<string, SecureVersion> = { TLS10: 'TLSv1', TLS11: 'TLSv1.1', TLS12: 'TLSv1.2', TLS13: 'TLSv1.3' };
/** Keys of each section, as exporter-toolkit reads them (strictly: any other key is an error). */
const KEYS = {
  top: ['tls_server_config', 'http_server_config', 'basic_auth_users'],
  tls_server_config: [
    'cert_file',
    'key_file',
    'cert',
    'key',
    'client_ca_file',
    'client_ca',
    'client_auth_type',
    'min_version',
    'max_version',
    'prefer_server_cipher_suites',
  ],
  http_server_config: ['headers', 'http2'],
};
/** exporter-toolkit keys trainwatch does not implement: refused rather than silently ignored. */
const UNSUPPORTED = ['rate_limit', 'cipher_suites', 'curve_preferences', 'client_allowed_sans'];

/**
 * Reads and validates a web config file as exporter-toolkit does; errors name the key and the
 * fix. Relative file paths are relative to the web config file's directory.
 */
export function loadWebConfig(path: string | undefined): WebConfig {
  const wc: WebConfig = { basicAuthUsers: new Map(), headers: {} };
  if (!path) return wc;
  const fail = (msg: string): never => {
    throw new ConfigError(`web config ${path}: ${msg}`);
  };
  let doc: unknown;
  try {
    doc = parseYaml(readSettingFile(path, '--web.config.file').toString('utf8')) ?? {};
  } catch (e) {
    throw new ConfigError(`--web.config.file ${path}: ${(e as Error).message.split('\n')[0]}`);
  }
  const top = section(doc, 'the file', KEYS.top, fail);
  const tls = top.tls_server_config === undefined ? undefined : section(top.tls_server_config, 'tls_server_config', KEYS.tls_server_config, fail);
  const str = (key: string): string | undefined => {
    const v = tls?.[key];
    if (v !== undefined && v !== null && typeof v !== 'string') fail(`tls_server_config.${key} must be a string`);
    return (v as string | null | undefined) || undefined;
  };
  const read = (key: string): Buffer | undefined => {
    const p = str(key);
    if (p === undefined) return undefined;
    return readSettingFile(resolve(dirname(path), p), `web config ${path}: ${key}`);
  };
  const inline = (key: string): Buffer | undefined => (str(key) === undefined ? undefined : Buffer.from(str(key)!));
  // exporter-toolkit turns TLS on when any of these is set.
  if (tls && ['cert_file', 'key_file', 'cert', 'key', 'client_ca_file', 'client_ca', 'client_auth_type'].some((k) => str(k) !== undefined)) {
    if (str('cert_file') === undefined && str('cert') === undefined) fail('tls_server_config needs cert_file (or cert)');
    if (str('key_file') === undefined && str('key') === undefined) fail('tls_server_config needs key_file (or key)');
    const cert = (read('cert_file') ?? inline('cert'))!;
    const key = (read('key_file') ?? inline('key'))!;
    const ca = read('client_ca_file') ?? inline('client_ca');
    const type = str('client_auth_type') ?? 'NoClientCert';
    const auth = (type === 'RequireClientCert' ? 'RequireAnyClientCert' : type) as ClientAuthType;
    if (!CLIENT_AUTH_TYPES.includes(auth)) fail(`tls_server_config.client_auth_type '${type}'; accepted: ${CLIENT_AUTH_TYPES.join(', ')}`);
    if (ca && auth === 'NoClientCert')
      fail(
        'client_ca_file (or client_ca) is set but client_auth_type is NoClientCert (the default), so no client certificate would be asked for; set client_auth_type: RequireAndVerifyClientCert (or VerifyClientCertIfGiven)',
      );
    const version = (k: string, dflt: string): SecureVersion => {
      const v = str(k) ?? dflt;
      return VERSIONS[v] ?? fail(`tls_server_config.${k} '${v}'; accepted: ${Object.keys(VERSIONS).join(', ')}`);
    };
    const prefer = tls.prefer_server_cipher_suites ?? true;
    if (typeof prefer !== 'boolean') fail('tls_server_config.prefer_server_cipher_suites must be true or false');
    // Only RequireAndVerifyClientCert fails the handshake itself; the other policies are checked
    // on the finished handshake (clientCertRefusal), as Go's crypto/tls tells them apart.
    wc.tls = {
      cert,
      key,
      ca,
      requestCert: auth !== 'NoClientCert',
      rejectUnauthorized: auth === 'RequireAndVerifyClientCert',
      minVersion: version('min_version', 'TLS12'),
      maxVersion: version('max_version', 'TLS13'),
      honorCipherOrder: prefer as boolean,
      clientAuth: auth,
    };
  }
  const users = top.basic_auth_users ?? {};
  if (typeof users !== 'object' || users === null || Array.isArray(users)) fail('basic_auth_users must map user names to bcrypt hashes');
  for (const [u, h] of Object.entries(users as Record<string, unknown>)) {
    if (typeof h !== 'string' || !/^\$2[aby]\$\d\d\$/.test(h))
      fail(`basic_auth_users.${u} must be a bcrypt hash (make one with: htpasswd -nBC 10 "" | tr -d ':\\n')`);
    wc.basicAuthUsers.set(u, h as string);
  }
  const http = top.http_server_config === undefined ? {} : section(top.http_server_config, 'http_server_config', KEYS.http_server_config, fail);
  if (http.http2 !== undefined && typeof http.http2 !== 'boolean') fail('http_server_config.http2 must be true or false');
  const hs = http.headers ?? {};
  if (typeof hs !== 'object' || hs === null || Array.isArray(hs)) fail('http_server_config.headers must map header names to values');
  for (const [k, v] of Object.entries(hs as Record<string, unknown>)) wc.headers[k] = headerValue(k, v, fail);
  return wc;
}

/** The headers exporter-toolkit lets http_server_config.headers set, with the values it allows (any if none listed). */
const HEADERS: Record<string, readonly string[]> = {
  'strict-transport-security': [],
  'x-content-type-options': ['nosniff'],
  'x-frame-options': ['deny', 'sameorigin'],
  'x-xss-protection': [],
  'content-security-policy': [],
};

// A configured header checked now, so that a bad one stops the start instead of failing every answer.
function headerValue(name: string, raw: unknown, fail: (msg: string) => never): string {
  const at = `http_server_config.headers: header ${JSON.stringify(name)}`;
  if (typeof raw !== 'string' && typeof raw !== 'number') return fail(`${at} must have a string value`);
  const value = String(raw);
  try {
    validateHeaderName(name);
  } catch {
    fail(`${at} is not a valid HTTP header name`);
  }
  try {
    validateHeaderValue(name, value);
  } catch {
    fail(`${at} has a value that is not valid in HTTP (control characters or line breaks): ${JSON.stringify(value)}`);
  }
  const allowed = HEADERS[name.toLowerCase()];
  if (!allowed)
    fail(
      `${at} cannot be configured (as in exporter-toolkit); accepted: Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, Content-Security-Policy`,
    );
  if (allowed.length > 0 && !allowed.includes(value.toLowerCase())) fail(`${at} has value ${JSON.stringify(value)}; accepted: ${allowed.join(', ')}`);
  return value;
}

// A mapping with only the `known` keys; a missing or empty section is {}.
function section(v: unknown, where: string, known: string[], fail: (msg: string) => never): Record<string, unknown> {
  if (v === null || v === undefined) return {};
  if (typeof v !== 'object' || Array.isArray(v)) return fail(`${where} must be a mapping of keys to values`);
  for (const k of Object.keys(v)) {
    const at = where === 'the file' ? `unknown key '${k}'` : `unknown key '${k}' in ${where}`;
    if (UNSUPPORTED.includes(k)) fail(`'${k}' is an exporter-toolkit key that trainwatch does not implement; remove it. Accepted here: ${known.join(', ')}`);
    if (!known.includes(k)) fail(`${at}; accepted: ${known.join(', ')}`);
  }
  return v as Record<string, unknown>;
}

/**
 * Why a finished TLS handshake does not meet the client_auth_type, or undefined if it does:
 * RequireAnyClientCert wants any certificate, VerifyClientCertIfGiven one that verifies if one
 * was sent, RequireAndVerifyClientCert one that verifies (the handshake already refused others).
 */
export function clientCertRefusal(auth: ClientAuthType, socket: TLSSocket): string | undefined {
  if (auth === 'NoClientCert' || auth === 'RequestClientCert') return undefined;
  const cert = socket.getPeerCertificate();
  const given = cert !== null && typeof cert === 'object' && Object.keys(cert).length > 0;
  if (!given) return auth === 'VerifyClientCertIfGiven' ? undefined : `client_auth_type ${auth}: no client certificate`;
  if (auth === 'RequireAnyClientCert' || socket.authorized) return undefined;
  return `client_auth_type ${auth}: client certificate does not verify (${String(socket.authorizationError)})`;
}

/** At most this many bcrypt comparisons are admitted (one runs, the rest wait); a check beyond them is answered 503 at once. */
export const BCRYPT_MAX_IN_FLIGHT = 4;
/** How long a verified (user, password) pair, right or wrong, is answered from memory. */
export const AUTH_CACHE_TTL_MS = 60_000;
/** Cached right pairs (few: the scrapers and Alertmanager); wrong ones are kept apart, so guessing cannot evict them. */
export const AUTH_CACHE_GOOD_MAX = 64;
/** Cached wrong pairs. */
export const AUTH_CACHE_BAD_MAX = 1024;

/** What a basic-auth check concluded: `busy` means too many comparisons were in flight (503, retry). */
export type AuthVerdict = 'ok' | 'wrong' | 'busy';

/**
 * One thread that runs bcrypt (bcrypt-worker.ts), started on first use; it never keeps the
 * process alive and is terminated by close(). If it cannot start or dies, this and every later
 * call runs bcryptjs's async version on the main thread instead, which yields to the event loop
 * every 100 ms of work: slower answers to other requests, never a wrong verdict.
 */
export class BcryptThread {
  private worker: Worker | undefined;
  private readonly waiting = new Map<number, (result: boolean | string | Error) => void>();
  private nextId = 0;
  private failed = false;
  private closed = false;

  /** Whether `password` matches `hash`. */
  compare(password: string, hash: string): Promise<boolean> {
    return this.call({ password, hash }, () => bcrypt.compare(password, hash)) as Promise<boolean>;
  }

  /** A bcrypt hash of `password` at `cost`. */
  hash(password: string, cost: number): Promise<string> {
    return this.call({ password, cost }, () => bcrypt.hash(password, cost)) as Promise<string>;
  }

  async close(): Promise<void> {
    this.closed = true;
    const w = this.worker;
    this.worker = undefined;
    this.failAll(new Error('bcrypt thread stopped'));
    await w?.terminate();
  }

  private async call(req: Omit<BcryptRequest, 'id'>, inThread: () => Promise<boolean | string>): Promise<boolean | string> {
    const w = this.failed || this.closed ? undefined : this.start();
    if (!w) return inThread();
    const id = this.nextId++;
    const result = await new Promise<boolean | string | Error>((resolve) => {
      this.waiting.set(id, resolve);
      w.postMessage({ ...req, id });
    });
    return result instanceof Error ? inThread() : result;
  }

  private start(): Worker | undefined {
    if (this.worker) return this.worker;
    try {
      const w = new Worker(new URL('./bcrypt-worker.js', import.meta.url));
      w.unref();
      w.on('message', (m: { id: number; result: boolean | string }) => {
        this.waiting.get(m.id)?.(m.result);
        this.waiting.delete(m.id);
      });
      w.on('error', (e) => this.fail(e));
      w.on('exit', (code) => {
        if (this.worker === w) this.fail(new Error(`bcrypt thread exited with code ${code}`));
      });
      return (this.worker = w);
    } catch (e) {
      this.fail(e as Error); // e.g. a missing bcrypt-worker.js in a broken install
      return undefined;
    }
  }

  private fail(e: Error): void {
    this.failed = true;
    this.worker = undefined;
    this.failAll(e);
  }

  private failAll(e: Error): void {
    for (const resolve of this.waiting.values()) resolve(e);
    this.waiting.clear();
  }
}

/**
 * Checks basic-auth credentials. bcrypt is slow on purpose (about 60 ms at cost 10, 250 ms at
 * cost 12), so: comparisons run on a thread of their own (BcryptThread), one at a time, at most
 * BCRYPT_MAX_IN_FLIGHT admitted, so that a flood of guesses costs one core at most and queues
 * no unbounded work; an unknown user is compared against a decoy hash of the highest configured
 * cost, so the answer's timing does not tell which users exist (as exporter-toolkit does); and a
 * verified pair is remembered for AUTH_CACHE_TTL_MS, keyed by an HMAC under a key made at start,
 * so no password or plain digest of one is kept in memory and Prometheus's scrapes every 15 s
 * cost one comparison a minute. The users never change while the process runs, so a cached
 * answer cannot go stale.
 */
export class BasicAuth {
  private readonly key = randomBytes(32);
  private readonly good = new Map<string, number>();
  private readonly bad = new Map<string, number>();
  private admitted = 0;
  /** the comparison running or last run: the next one starts after it */
  private tail: Promise<unknown> = Promise.resolve();
  private decoy: Promise<string> | undefined;
  private readonly bcrypt = new BcryptThread();

  constructor(
    private readonly users: Map<string, string>,
    private readonly stats = new HttpStats(),
  ) {}

  /** Stops the bcrypt thread; a later check runs on the main thread. */
  close(): Promise<void> {
    return this.bcrypt.close();
  }

  get enabled(): boolean {
    return this.users.size > 0;
  }

  /** Whether an Authorization header holds valid basic credentials; counted by verdict. */
  async check(header: string | undefined): Promise<AuthVerdict> {
    const v = await this.verify(header);
    this.stats.auth(v === 'ok' ? 'accepted' : v === 'busy' ? 'throttled' : 'rejected');
    return v;
  }

  private async verify(header: string | undefined): Promise<AuthVerdict> {
    if (!header || !/^basic /i.test(header)) return 'wrong';
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return 'wrong';
    const key = createHmac('sha256', this.key).update(decoded).digest('base64');
    const now = Date.now();
    if (fresh(this.good, key, now)) return 'ok';
    if (fresh(this.bad, key, now)) return 'wrong';
    if (this.admitted >= BCRYPT_MAX_IN_FLIGHT) return 'busy';
    this.admitted++;
    try {
      const run = this.tail.then(() => this.compare(decoded.slice(0, colon), decoded.slice(colon + 1)));
      this.tail = run.catch(() => undefined);
      const ok = await run;
      remember(ok ? this.good : this.bad, ok ? AUTH_CACHE_GOOD_MAX : AUTH_CACHE_BAD_MAX, key, Date.now() + AUTH_CACHE_TTL_MS);
      return ok ? 'ok' : 'wrong';
    } finally {
      this.admitted--;
    }
  }

  private async compare(user: string, password: string): Promise<boolean> {
    const hash = this.users.get(user);
    const against = hash ?? (await (this.decoy ??= this.bcrypt.hash('decoy', Math.max(...[...this.users.values()].map((h) => bcrypt.getRounds(h))))));
    this.stats.bcrypt++;
    return (await this.bcrypt.compare(password, against)) && hash !== undefined;
  }
}

// Whether `key` is cached and not expired (an expired entry is dropped).
function fresh(cache: Map<string, number>, key: string, now: number): boolean {
  const until = cache.get(key);
  if (until === undefined) return false;
  if (until > now) return true;
  cache.delete(key);
  return false;
}

// Caches `key` until `until`, dropping the oldest entry when full.
function remember(cache: Map<string, number>, max: number, key: string, until: number): void {
  cache.delete(key);
  if (cache.size >= max) cache.delete(cache.keys().next().value!);
  cache.set(key, until);
}

/** Constant-time bearer check: any missing, wrong or wrong-length token is simply false. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (!header || !header.startsWith('Bearer ')) return false;
  // Comparing digests keeps lengths equal, so timingSafeEqual never throws on a short token.
  const a = createHash('sha256').update(header.slice(7).trim()).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}
