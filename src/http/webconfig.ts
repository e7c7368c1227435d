// The exporter-toolkit web config file (--web.config.file), as every Go exporter reads it:
// tls_server_config, basic_auth_users (bcrypt hashes) and http_server_config.headers.
import { readFileSync } from 'node:fs';
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../config/load.js';
import { HttpStats } from './stats.js';

/** TLS settings for https.createServer. */
export interface TlsSettings {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer;
  requestCert: boolean;
  rejectUnauthorized: boolean;
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
}

/** The parsed web config. */
export interface WebConfig {
  tls?: TlsSettings;
  basicAuthUsers: Map<string, string>;
  headers: Record<string, string>;
}

const CLIENT_AUTH = {
  NoClientCert: [false, false],
  RequestClientCert: [true, false],
  RequireAnyClientCert: [true, false],
  VerifyClientCertIfGiven: [true, false],
  RequireAndVerifyClientCert: [true, true],
} as const;

/** Reads and validates a web config file; errors name the key and the fix. */
export function loadWebConfig(path: string | undefined): WebConfig {
  const wc: WebConfig = { basicAuthUsers: new Map(), headers: {} };
  if (!path) return wc;
  let doc: Record<string, unknown>;
  const read = (p: string, key: string): Buffer => {
    try {
      return readFileSync(p);
    } catch (e) {
      throw new ConfigError(`web config ${path}: ${key}: cannot read ${p}: ${(e as Error).message}`);
    }
  };
  try {
    doc = (parseYaml(readFileSync(path, 'utf8')) ?? {}) as Record<string, unknown>;
  } catch (e) {
    throw new ConfigError(`--web.config.file ${path}: ${(e as Error).message.split('\n')[0]}`);
  }
  const known = ['tls_server_config', 'basic_auth_users', 'http_server_config'];
  for (const k of Object.keys(doc)) if (!known.includes(k)) throw new ConfigError(`web config ${path}: unknown key '${k}'; known: ${known.join(', ')}`);
  const tls = doc.tls_server_config as Record<string, string> | undefined;
  if (tls) {
    if (!tls.cert_file || !tls.key_file) throw new ConfigError(`web config ${path}: tls_server_config needs both cert_file and key_file`);
    const auth = (tls.client_auth_type ?? (tls.client_ca_file ? 'RequireAndVerifyClientCert' : 'NoClientCert')) as keyof typeof CLIENT_AUTH;
    if (!(auth in CLIENT_AUTH)) throw new ConfigError(`web config ${path}: tls_server_config.client_auth_type '${auth}'; accepted: ${Object.keys(CLIENT_AUTH).join(', ')}`);
    const min = tls.min_version;
    if (min !== undefined && min !== 'TLS12' && min !== 'TLS13') throw new ConfigError(`web config ${path}: tls_server_config.min_version '${min}'; accepted: TLS12, TLS13`);
    wc.tls = {
      cert: read(tls.cert_file, 'cert_file'),
      key: read(tls.key_file, 'key_file'),
      ca: tls.client_ca_file ? read(tls.client_ca_file, 'client_ca_file') : undefined,
      requestCert: CLIENT_AUTH[auth][0],
      rejectUnauthorized: CLIENT_AUTH[auth][1],
      minVersion: min === 'TLS13' ? 'TLSv1.3' : 'TLSv1.2',
    };
  }
  const users = doc.basic_auth_users as Record<string, string> | undefined;
  for (const [u, h] of Object.entries(users ?? {})) {
    if (typeof h !== 'string' || !/^\$2[aby]\$\d\d\$/.test(h)) throw new ConfigError(`web config ${path}: basic_auth_users.${u} must be a bcrypt hash (make one with: htpasswd -nBC 10 "" | tr -d ':\\n')`);
    wc.basicAuthUsers.set(u, h);
  }
  const hs = (doc.http_server_config as Record<string, unknown> | undefined)?.headers as Record<string, string> | undefined;
  for (const [k, v] of Object.entries(hs ?? {})) wc.headers[k] = String(v);
  return wc;
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
 * Checks basic-auth credentials. bcrypt is slow on purpose (about 60 ms at cost 10), so:
 * comparisons use bcryptjs's async compare, which yields to the event loop at least every
 * 100 ms of work; they run one at a time (several at once would run their slices back to back
 * between two polls of the event loop), at most BCRYPT_MAX_IN_FLIGHT admitted; an unknown user is compared against a decoy hash
 * of the highest configured cost, so the answer's timing does not tell which users exist (as
 * exporter-toolkit does); and a verified pair is remembered for AUTH_CACHE_TTL_MS, keyed by an
 * HMAC under a key made at start, so no password or plain digest of one is kept in memory and
 * Prometheus's scrapes every 15 s cost one comparison a minute. The users never change while
 * the process runs, so a cached answer cannot go stale.
 */
export class BasicAuth {
  private readonly key = randomBytes(32);
  private readonly good = new Map<string, number>();
  private readonly bad = new Map<string, number>();
  private admitted = 0;
  /** the comparison running or last run: the next one starts after it */
  private tail: Promise<unknown> = Promise.resolve();
  private decoy: Promise<string> | undefined;

  constructor(
    private readonly users: Map<string, string>,
    private readonly stats = new HttpStats(),
  ) {}

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
    const against = hash ?? (await (this.decoy ??= bcrypt.hash('decoy', Math.max(...[...this.users.values()].map((h) => bcrypt.getRounds(h))))));
    this.stats.bcrypt++;
    return (await bcrypt.compare(password, against)) && hash !== undefined;
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
