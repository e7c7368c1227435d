// Resolves the config: flag > env > config file > default, and validates every value with
// an error that names the key, the source and the accepted range.
import { closeSync, constants, fstatSync, openSync, readSync, statSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { Profiles, ProfileError, parseProfiles, type ProfileValues } from './profiles.js';
import { SETTINGS, defaultConfig, settingFor, type Config, type Setting } from './settings.js';

/** A bad setting; the message names the key, where it came from, and what is accepted. */
export class ConfigError extends Error {}

/** The largest file a setting may name (config, web config, token, certificates). */
export const MAX_SETTING_FILE_BYTES = 1 << 20;

/**
 * Reads a file that a setting names; `what` names the setting in errors. Opened with O_NONBLOCK,
 * since opening a FIFO to read blocks until a writer comes (startup would hang), and checked
 * with fstat on the open handle, so no rename between a check and the open can slip a FIFO,
 * device or directory in. At most MAX_SETTING_FILE_BYTES are read.
 */
export function readSettingFile(path: string, what: string): Buffer {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    throw new ConfigError(`${what}: cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new ConfigError(`${what}: ${path} is ${fileKind(st)}, not a regular file; give the path of a file`);
    const buf = Buffer.allocUnsafe(MAX_SETTING_FILE_BYTES + 1);
    let n = 0;
    for (let got = -1; got !== 0 && n < buf.length; n += got) got = readSync(fd, buf, n, buf.length - n, null);
    if (n > MAX_SETTING_FILE_BYTES) throw new ConfigError(`${what}: ${path} is larger than ${MAX_SETTING_FILE_BYTES} bytes; give the path of the right file`);
    return Buffer.from(buf.subarray(0, n));
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError(`${what}: cannot read ${path}: ${(e as Error).message}`);
  } finally {
    closeSync(fd);
  }
}

function fileKind(st: Stats): string {
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isDirectory()) return 'a directory';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

type Source = { name: string; values: Map<string, unknown> };

/**
 * Builds a Config. `flags` holds values given on the command line (keyed by setting key),
 * `env` is the process environment; the config file path may come from either.
 */
export function resolveConfig(flags: Map<string, unknown>, env: NodeJS.ProcessEnv): Config {
  const envValues = new Map<string, unknown>();
  for (const s of SETTINGS as readonly Setting[]) {
    if (s.env && env[s.env] !== undefined && env[s.env] !== '') envValues.set(s.key, env[s.env]);
  }
  const configPath = (flags.get('config') ?? envValues.get('config')) as string | undefined;
  const fileValues = configPath ? readConfigFile(configPath) : new Map<string, unknown>();
  const profiles = (fileValues.get(PROFILES_KEY) ?? {}) as Record<string, ProfileValues>;
  fileValues.delete(PROFILES_KEY);
  const sources: Source[] = [
    { name: 'flag', values: flags },
    { name: 'env', values: envValues },
    { name: `config file ${configPath}`, values: fileValues },
  ];
  const config = defaultConfig();
  const values: Record<string, unknown> = config;
  for (const s of SETTINGS as readonly Setting[]) {
    for (const src of sources) {
      if (!src.values.has(s.key)) continue;
      const where = src.name === 'env' ? `env ${s.env}` : src.name === 'flag' ? `--${s.key}` : `${src.name}: key '${s.key}'`;
      values[s.key] = coerce(s, src.values.get(s.key), where);
      break;
    }
  }
  config.profiles = profiles;
  validateCombination(config);
  try {
    new Profiles(config); // every glob names a defined profile
  } catch (e) {
    if (e instanceof ProfileError) throw new ConfigError(e.message);
    throw e;
  }
  return config;
}

/** The config file's section of threshold profiles (config/profiles.ts). */
const PROFILES_KEY = 'profiles';

function readConfigFile(path: string): Map<string, unknown> {
  const text = readSettingFile(path, '--config').toString('utf8');
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new ConfigError(`config file ${path} is not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  const out = new Map<string, unknown>();
  if (doc === null || doc === undefined) return out;
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(`config file ${path} must be a YAML mapping of setting names to values`);
  const { [PROFILES_KEY]: profiles, ...rest } = doc as Record<string, unknown>;
  let parsed: Record<string, ProfileValues>;
  try {
    parsed = parseProfiles(profiles, `config file ${path}`, coerce);
  } catch (e) {
    if (e instanceof ProfileError) throw new ConfigError(e.message);
    throw e;
  }
  flatten(rest, '', out);
  const known = new Set((SETTINGS as readonly Setting[]).map((s) => s.key));
  for (const [key, v] of [...out]) {
    const s = settingFor(key);
    if (!s) throw new ConfigError(`config file ${path}: unknown key '${key}'. Known keys: ${[...known].join(', ')}`);
    if (s.key === key) continue;
    if (out.has(s.key)) throw new ConfigError(`config file ${path}: '${key}' and '${s.key}' are the same setting; keep only one`);
    out.delete(key);
    out.set(s.key, v);
  }
  out.set(PROFILES_KEY, parsed);
  return out;
}

// Nested maps become dotted keys, except where the dotted prefix is itself a setting's key.
function flatten(obj: Record<string, unknown>, prefix: string, out: Map<string, unknown>): void {
  const known = new Set((SETTINGS as readonly Setting[]).flatMap((s) => [s.key, ...(s.aliases ?? [])]));
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (!known.has(key) && v !== null && typeof v === 'object' && !Array.isArray(v)) flatten(v as Record<string, unknown>, key, out);
    else out.set(key, v);
  }
}

function coerce(s: Setting, raw: unknown, where: string): unknown {
  const bad = (accepted: string) => new ConfigError(`${where}: invalid value ${JSON.stringify(raw)} for ${s.key}; accepted: ${accepted}`);
  switch (s.type) {
    case 'bool': {
      if (typeof raw === 'boolean') return raw;
      const t = String(raw).trim().toLowerCase();
      if (['1', 'true', 'yes', 'on'].includes(t)) return true;
      if (['0', 'false', 'no', 'off'].includes(t)) return false;
      throw bad('0 or 1 (also true/false)');
    }
    case 'number':
    case 'int': {
      const v = typeof raw === 'number' ? raw : String(raw).trim() === '' ? NaN : Number(String(raw).trim());
      const range = `${s.type === 'int' ? 'a whole number' : 'a number'} from ${s.min} to ${s.max}`;
      if (!Number.isFinite(v) || (s.type === 'int' && !Number.isInteger(v))) throw bad(range);
      if ((s.min !== undefined && v < s.min) || (s.max !== undefined && v > s.max)) throw bad(range);
      return v;
    }
    case 'enum': {
      const t = String(raw).trim();
      if (!s.choices!.includes(t)) throw bad(s.choices!.join(', '));
      return t;
    }
    case 'list': {
      const items = Array.isArray(raw) ? raw.map(String) : String(raw).split(',');
      return items.map((x) => x.trim()).filter((x) => x !== '');
    }
    case 'string': {
      if (typeof raw === 'object') throw bad('a string');
      return String(raw);
    }
  }
}

function validateCombination(c: Config): void {
  if (!/^(\[[0-9a-fA-F:.]+\]|[^:\s]*):\d{1,5}$/.test(c['web.listen-address'])) {
    throw new ConfigError(`--web.listen-address: invalid value ${JSON.stringify(c['web.listen-address'])}; accepted: host:port, e.g. :9465 or 127.0.0.1:9465`);
  }
  const port = Number(c['web.listen-address'].split(':').pop());
  if (port > 65535) throw new ConfigError(`--web.listen-address: port ${port} is out of range 0..65535`);
  if (!c['web.telemetry-path'].startsWith('/'))
    throw new ConfigError(`--web.telemetry-path: must start with '/', got ${JSON.stringify(c['web.telemetry-path'])}`);
}

/** The original watchdog's default run directory (relative to the working directory). */
export const DEFAULT_RUN_DIR = 'artifacts/train_showcase';

/**
 * With neither --dir nor --root, watch DEFAULT_RUN_DIR when it is a directory here, as the
 * original did. Returns the directory chosen, or undefined (then there is nothing to watch).
 */
export function applyDefaultDir(c: Config, cwd = process.cwd()): string | undefined {
  if (c.dir.length > 0 || c.root.length > 0) return undefined;
  try {
    if (!statSync(join(cwd, DEFAULT_RUN_DIR)).isDirectory()) return undefined;
  } catch {
    return undefined;
  }
  c.dir = [DEFAULT_RUN_DIR];
  return DEFAULT_RUN_DIR;
}

/** The usage error for nothing to watch. */
export const NOTHING_TO_WATCH = `nothing to watch. Pass --dir <run directory> (as for the original watchdog) or --root <directory of runs>, or run it where ${DEFAULT_RUN_DIR} exists (the original's default), or try: trainwatch demo`;
