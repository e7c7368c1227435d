// Threshold profiles: several runs on one host, each judged by its own thresholds, as when the
// original ran one watchdog per run with its own NSA_WATCH_* environment. Pure: the profiles
// come from the config, a run's profile from its name (and, opt-in, the profile file its
// directory names), and the result is a set of thresholds the detector and the rules use.
import { SETTINGS, defaultConfig, thresholdsOf, type Config, type Setting, type SettingKey, type Thresholds } from './settings.js';

/** The settings a profile may set: detection thresholds and whether to halt. Nothing that executes or opens a file. */
export const PROFILE_KEYS = [
  'watch.heartbeat-stall-s',
  'watch.flatline-n',
  'watch.loss-flatline-n',
  'watch.grad-zero-n',
  'watch.fetch-stall-ratio',
  'watch.fetch-warmup-n',
  'watch.gate-collapse-n',
  'watch.gate-entropy-min',
  'watch.gate-max-threshold',
  'watch.gate-collapse-frac',
  'watch.nonfinite-n',
  'watch.startup-grace-s',
  'watch.straggler-steps',
  'halt',
] as const satisfies readonly SettingKey[];

export type ProfileKey = (typeof PROFILE_KEYS)[number];

/** What a profile sets; every other setting is the global one. */
export type ProfileValues = Partial<Pick<Config, ProfileKey>>;

/** The profile of runs that no rule matches: the global settings as they are. */
export const DEFAULT_PROFILE = 'default';

/**
 * The Watchdog Tuning Guide's hardware profiles, shipped by name. Its NSA_WATCH_INTERVAL_S is
 * not part of them: trainwatch detects on file events, and the interval is only its safety
 * sweep, one for the whole process.
 */
export const BUILTIN_PROFILES: Readonly<Record<string, ProfileValues>> = {
  'a100-production': { 'watch.heartbeat-stall-s': 120, 'watch.flatline-n': 3, halt: true },
  'rtx4090-dev': { 'watch.heartbeat-stall-s': 300, 'watch.flatline-n': 8, halt: false },
  'multi-node': { 'watch.heartbeat-stall-s': 240, 'watch.flatline-n': 6, halt: true },
};

/** A profile name: letters, digits, '.', '_' and '-' (it becomes a label value and a file's content). */
export const PROFILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** A run-name glob and the profile its runs get. */
export interface ProfileRule {
  glob: string;
  profile: string;
  re: RegExp;
}

/** What a run is judged by. */
export interface RunProfile {
  name: string;
  /** how it was chosen: no rule matched, a glob, or the run directory's profile file */
  via: 'default' | 'glob' | 'file';
  thresholds: Thresholds;
  halt: boolean;
}

/** A bad profile or rule; the message names where and the fix. */
export class ProfileError extends Error {}

/**
 * A glob over run names as a RegExp: `*` is any run of characters but '/', `**` any run at all,
 * `?` one character but '/'. Everything else is literal.
 */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}

/** Parses `run.profile` entries (`GLOB=PROFILE`), checking each profile exists. */
export function parseRules(entries: readonly string[], known: ReadonlySet<string>): ProfileRule[] {
  return entries.map((e) => {
    const at = e.lastIndexOf('=');
    const glob = at > 0 ? e.slice(0, at).trim() : '';
    const profile = at > 0 ? e.slice(at + 1).trim() : '';
    if (!glob || !profile) throw new ProfileError(`run.profile: ${JSON.stringify(e)} is not GLOB=PROFILE; for example 'dev-*=rtx4090-dev'`);
    if (!known.has(profile))
      throw new ProfileError(`run.profile: ${JSON.stringify(e)} names profile '${profile}', which is not defined. Known: ${[...known].join(', ')}`);
    return { glob, profile, re: globToRegExp(glob) };
  });
}

const SETTING_OF = new Map<string, Setting>();
for (const s of SETTINGS as readonly Setting[]) {
  if (!(PROFILE_KEYS as readonly string[]).includes(s.key)) continue;
  SETTING_OF.set(s.key, s);
  if (s.key.startsWith('watch.')) SETTING_OF.set(s.key.slice('watch.'.length), s);
  if (s.env) SETTING_OF.set(s.env, s);
}

/**
 * Reads the config file's `profiles:` section (name → settings) with `coerce` (the settings'
 * own validation). A key may be the setting's key, the key without `watch.`, or its NSA_WATCH_*
 * name, so the guide's environment blocks can be pasted in.
 */
export function parseProfiles(doc: unknown, where: string, coerce: (s: Setting, raw: unknown, where: string) => unknown): Record<string, ProfileValues> {
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ProfileError(`${where}: 'profiles' must map profile names to settings`);
  const out: Record<string, ProfileValues> = {};
  for (const [name, body] of Object.entries(doc as Record<string, unknown>)) {
    if (!PROFILE_NAME.test(name) || name === DEFAULT_PROFILE)
      throw new ProfileError(`${where}: profile name '${name}' is not allowed; use letters, digits, '.', '_' and '-' (and not '${DEFAULT_PROFILE}')`);
    if (body === null || typeof body !== 'object' || Array.isArray(body))
      throw new ProfileError(`${where}: profile '${name}' must be a mapping of settings to values`);
    const values: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(flattenOne(body as Record<string, unknown>))) {
      const s = SETTING_OF.get(k);
      if (!s) throw new ProfileError(`${where}: profile '${name}': '${k}' cannot be set per run. Allowed: ${PROFILE_KEYS.join(', ')}`);
      if (s.key in values) throw new ProfileError(`${where}: profile '${name}' sets ${s.key} twice`);
      values[s.key] = coerce(s, v, `${where}: profile '${name}': key '${k}'`);
    }
    out[name] = values;
  }
  return out;
}

// `watch: {heartbeat-stall-s: 1}` is `watch.heartbeat-stall-s: 1`, as in the rest of the config file.
function flattenOne(body: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(body)) {
    if (k === 'watch' && v !== null && typeof v === 'object' && !Array.isArray(v)) for (const [k2, v2] of Object.entries(v)) out[`watch.${k2}`] = v2;
    else out[k] = v;
  }
  return out;
}

/** Every profile by name: the shipped ones, overridden or added to by the config file. */
export function allProfiles(config: Pick<Config, 'profiles'>): Record<string, ProfileValues> {
  return { ...BUILTIN_PROFILES, ...config.profiles };
}

/** The profile of a run under the default config: for tests and benchmarks that build runs by hand. */
export function defaultRunProfile(): RunProfile {
  return new Profiles(defaultConfig()).base();
}

/** The profiles and rules of a config, checked; built once at start. */
export class Profiles {
  readonly defined: Record<string, ProfileValues>;
  readonly rules: ProfileRule[];
  private readonly cache = new Map<string, RunProfile>();

  constructor(private readonly config: Config) {
    this.defined = allProfiles(config);
    this.rules = parseRules(config['run.profile'], new Set(Object.keys(this.defined)));
  }

  /** Whether run directories may choose their profile (run.profile-file). */
  get fileChoice(): boolean {
    return this.config['run.profile-file'];
  }

  /** The profile a run is on: the one its directory names (if allowed and defined), else the first matching glob, else the default. */
  forRun(runName: string, named?: string): RunProfile {
    let name = DEFAULT_PROFILE;
    let via: RunProfile['via'] = 'default';
    if (named !== undefined && this.fileChoice && named in this.defined) {
      name = named;
      via = 'file';
    } else {
      const rule = this.rules.find((r) => r.re.test(runName));
      if (rule) {
        name = rule.profile;
        via = 'glob';
      }
    }
    return this.make(name, via);
  }

  /** The profile of runs no glob matches: the global settings (a glob like `*` would match even ''). */
  base(): RunProfile {
    return this.make(DEFAULT_PROFILE, 'default');
  }

  // One object per profile and way of choosing it: runs share it.
  private make(name: string, via: RunProfile['via']): RunProfile {
    const key = `${via}:${name}`;
    let p = this.cache.get(key);
    if (!p) {
      const merged = { ...this.config, ...(this.defined[name] ?? {}) } as Config;
      p = { name, via, thresholds: thresholdsOf(merged), halt: merged.halt };
      this.cache.set(key, p);
    }
    return p;
  }
}
