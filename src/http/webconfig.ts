// The exporter-toolkit web config file (--web.config.file), as every Go exporter reads it:
// tls_server_config, basic_auth_users (bcrypt hashes) and http_server_config.headers.
import { readFileSync } from 'node:fs';
import { createHash, timingSafeEqual } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../config/load.js';

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

/** Checks basic-auth credentials; successful checks are cached, since bcrypt is slow on purpose. */
export class BasicAuth {
  private readonly ok = new Set<string>();

  constructor(private readonly users: Map<string, string>) {}

  get enabled(): boolean {
    return this.users.size > 0;
  }

  /** Whether an Authorization header holds valid basic credentials. */
  check(header: string | undefined): boolean {
    if (!header || !header.startsWith('Basic ')) return false;
    const cacheKey = createHash('sha256').update(header).digest('hex');
    if (this.ok.has(cacheKey)) return true;
    const decoded = Buffer.from(header.slice(6), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return false;
    const hash = this.users.get(decoded.slice(0, colon));
    if (!hash || !bcrypt.compareSync(decoded.slice(colon + 1), hash)) return false;
    if (this.ok.size > 1000) this.ok.clear();
    this.ok.add(cacheKey);
    return true;
  }
}

/** Constant-time bearer check: any missing, wrong or wrong-length token is simply false. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (!header || !header.startsWith('Bearer ')) return false;
  // Comparing digests keeps lengths equal, so timingSafeEqual never throws on a short token.
  const a = createHash('sha256').update(header.slice(7).trim()).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}
