// The ONE table of settings. Flags, env variables, YAML config keys, validation, --help and
// docs/configuration.md all come from it, so they cannot drift apart.
// Precedence when resolving: flag > env > config file > default.

/** How a setting's text is turned into a value. */
export type SettingType = 'number' | 'int' | 'bool' | 'string' | 'list' | 'enum';

/** One configurable value. */
export interface Setting {
  /** Flag name without the leading dashes; also the YAML key (dots may be nested maps). */
  key: string;
  env?: string;
  type: SettingType;
  default: number | boolean | string | string[] | undefined;
  min?: number;
  max?: number;
  choices?: readonly string[];
  /** Placeholder in --help. */
  arg?: string;
  /** Other flag (and YAML key) names for the same setting, e.g. the original watchdog's `interval`. */
  aliases?: readonly string[];
  help: string;
  /** Section in --help and docs. */
  group: 'Watch' | 'Detection (NSA_WATCH_*)' | 'Actions' | 'Notifications' | 'Web' | 'Tailing' | 'Logging';
}

import type { ProfileValues } from './profiles.js';

export const SETTINGS = [
  // Watch
  { key: 'dir', type: 'list', default: [], arg: 'path', group: 'Watch', help: "A run directory to watch (repeatable). The original watchdog's --dir." },
  {
    key: 'root',
    env: 'TRAINWATCH_ROOT',
    type: 'list',
    default: [],
    arg: 'path',
    group: 'Watch',
    help: 'A directory whose sub-directories are runs; new runs are picked up live (repeatable; env: comma-separated).',
  },
  {
    key: 'mode',
    env: 'TRAINWATCH_MODE',
    type: 'enum',
    choices: ['embedded', 'alertmanager'],
    default: 'embedded',
    group: 'Watch',
    help: 'embedded: trainwatch detects and acts by itself. alertmanager: it only exports metrics, and acts on alerts posted to its webhook.',
  },
  {
    key: 'run.ttl-s',
    env: 'TRAINWATCH_RUN_TTL_S',
    type: 'number',
    default: 21600,
    min: 60,
    max: 31536000,
    group: 'Watch',
    help: 'A run whose newest record is older than this many seconds is expired: its series go away and it no longer alerts.',
  },
  {
    key: 'run.max-ranks',
    env: 'TRAINWATCH_RUN_MAX_RANKS',
    type: 'int',
    default: 4096,
    min: 1,
    max: 1048576,
    group: 'Watch',
    help: 'At most this many distinct ranks per run: records of further ranks are dropped and counted as too_many_ranks (a file whose records carry many rank values cannot make one run cost unbounded memory and CPU). Raise it for larger jobs.',
  },
  {
    key: 'run.profile',
    env: 'TRAINWATCH_RUN_PROFILE',
    type: 'list',
    default: [],
    arg: 'glob=profile',
    group: 'Watch',
    help: "Runs whose name matches the glob are judged by the profile's thresholds (repeatable; the first match wins; env: comma-separated). Shipped profiles: a100-production, rtx4090-dev, multi-node; define more under 'profiles:' in the config file. See docs/configuration.md.",
  },
  {
    key: 'run.profile-file',
    env: 'TRAINWATCH_RUN_PROFILE_FILE',
    type: 'bool',
    default: false,
    group: 'Watch',
    help: 'A run directory may name its profile in a .trainwatch-profile file (one defined profile name, nothing else). Off by default: whoever writes the run directory then chooses its thresholds, among the defined profiles only.',
  },
  // Detection
  {
    key: 'watch.interval-s',
    env: 'NSA_WATCH_INTERVAL_S',
    aliases: ['interval'],
    type: 'number',
    default: 30,
    min: 0.1,
    max: 3600,
    group: 'Detection (NSA_WATCH_*)',
    help: 'Safety sweep period: every interval all files are re-checked and all rules re-evaluated. Detection itself is event-driven.',
  },
  {
    key: 'watch.heartbeat-stall-s',
    env: 'NSA_WATCH_HEARTBEAT_STALL_S',
    type: 'number',
    default: 180,
    min: 1,
    max: 604800,
    group: 'Detection (NSA_WATCH_*)',
    help: 'heartbeat_stall: no liveness record for this many seconds (watchdog_dump records are not liveness).',
  },
  {
    key: 'watch.flatline-n',
    env: 'NSA_WATCH_FLATLINE_N',
    type: 'int',
    default: 5,
    min: 1,
    max: 100000,
    group: 'Detection (NSA_WATCH_*)',
    help: 'throughput_flatline: this many consecutive progress records (or training.csv rows) with toks_per_s <= 0.',
  },
  {
    key: 'watch.loss-flatline-n',
    env: 'NSA_WATCH_LOSS_FLATLINE_N',
    type: 'int',
    default: 10,
    min: 0,
    max: 100000,
    group: 'Detection (NSA_WATCH_*)',
    help: 'loss_flatline: this many consecutive progress records with the identical loss; 0 disables.',
  },
  {
    key: 'watch.grad-zero-n',
    env: 'NSA_WATCH_GRAD_ZERO_N',
    type: 'int',
    default: 3,
    min: 0,
    max: 100000,
    group: 'Detection (NSA_WATCH_*)',
    help: 'zero_grad: this many consecutive progress records with grad_norm == 0; 0 disables.',
  },
  {
    key: 'watch.fetch-stall-ratio',
    env: 'NSA_WATCH_FETCH_STALL_RATIO',
    type: 'number',
    default: 3.0,
    min: 0,
    max: 1e6,
    group: 'Detection (NSA_WATCH_*)',
    help: 'fetch_stall: a dt_fetch_s above this multiple of its baseline (an EWMA of earlier normal fetches, see docs/detection.md); 0 disables.',
  },
  {
    key: 'watch.fetch-warmup-n',
    env: 'NSA_WATCH_FETCH_WARMUP_N',
    type: 'int',
    default: 10,
    min: 1,
    max: 100000,
    group: 'Detection (NSA_WATCH_*)',
    help: 'fetch_stall: how many dt_fetch_s samples form the baseline before the rule can fire.',
  },
  {
    key: 'watch.gate-collapse-n',
    env: 'NSA_WATCH_GATE_COLLAPSE_N',
    type: 'int',
    default: 3,
    min: 0,
    max: 100000,
    group: 'Detection (NSA_WATCH_*)',
    help: 'gate_collapse: this many consecutive progress records with collapsed gates; 0 disables.',
  },
  {
    key: 'watch.gate-entropy-min',
    env: 'NSA_WATCH_GATE_ENTROPY_MIN',
    type: 'number',
    default: 0.2,
    min: 0,
    max: 100,
    group: 'Detection (NSA_WATCH_*)',
    help: 'gate_collapse: a record is collapsed if gate_entropy_mean is below this ...',
  },
  {
    key: 'watch.gate-max-threshold',
    env: 'NSA_WATCH_GATE_MAX_THRESHOLD',
    type: 'number',
    default: 0.9,
    min: 0,
    max: 1,
    group: 'Detection (NSA_WATCH_*)',
    help: '... or gate_max_gate is above this ...',
  },
  {
    key: 'watch.gate-collapse-frac',
    env: 'NSA_WATCH_GATE_COLLAPSE_FRAC',
    type: 'number',
    default: 0.5,
    min: 0,
    max: 1,
    group: 'Detection (NSA_WATCH_*)',
    help: '... or gate_collapse_frac is above this.',
  },
  {
    key: 'watch.nonfinite-n',
    env: 'NSA_WATCH_NONFINITE_N',
    type: 'int',
    default: 1,
    min: 0,
    max: 100000,
    group: 'Detection (NSA_WATCH_*)',
    help: 'nonfinite_loss: this many consecutive progress records whose loss or grad_norm is NaN or +-Infinity; 0 disables.',
  },
  {
    key: 'watch.startup-grace-s',
    env: 'NSA_WATCH_STARTUP_GRACE_S',
    type: 'number',
    default: 900,
    min: 0,
    max: 604800,
    group: 'Detection (NSA_WATCH_*)',
    help: 'After a boot record and until the first progress record, the stall threshold is at least this (loaders and compilation are slow).',
  },
  {
    key: 'watch.straggler-steps',
    env: 'NSA_WATCH_STRAGGLER_STEPS',
    type: 'int',
    default: 200,
    min: 0,
    max: 1e9,
    group: 'Detection (NSA_WATCH_*)',
    help: "straggler: a rank whose step is this many steps behind the run's most advanced rank; 0 disables.",
  },
  {
    key: 'watch.crash-detect',
    env: 'NSA_WATCH_CRASH_DETECT',
    type: 'bool',
    default: false,
    group: 'Detection (NSA_WATCH_*)',
    help: "trainer_crash: the trainer's pid is gone on this host while no .HALT asked it to stop. Opt-in: only right when trainwatch shares the trainer's pid namespace.",
  },
  {
    key: 'watch.pid-check',
    env: 'NSA_WATCH_PID_CHECK',
    type: 'enum',
    choices: ['auto', 'on', 'off'],
    default: 'auto',
    group: 'Detection (NSA_WATCH_*)',
    help: "Tell a finished trainer from a hung one by its pid (the trainer writes no final record). auto: a pid seen alive on this host (and started when its records say) that is gone ends the run: no stall, no .HALT. on: also a pid never seen alive (trainwatch shares the trainers' pid namespace, e.g. after a trainwatch restart). off: liveness unknown; silence is judged as a stall.",
  },
  // Actions
  {
    key: 'halt',
    env: 'NSA_WATCH_HALT',
    type: 'bool',
    default: false,
    arg: '0|1',
    group: 'Actions',
    help: 'Write .HALT (the trainer stops gracefully) on a halting anomaly. .anomaly_type is written either way.',
  },
  {
    key: 'watch.escalate-s',
    env: 'NSA_WATCH_ESCALATE_S',
    type: 'number',
    default: 0,
    min: 0,
    max: 604800,
    group: 'Actions',
    help: 'Hung trainers never read .HALT: this many seconds after halting a stalled run, send SIGUSR1 (stack dump) to its pid on this host. 0 disables.',
  },
  {
    key: 'watch.escalate-term-s',
    env: 'NSA_WATCH_ESCALATE_TERM_S',
    type: 'number',
    default: 0,
    min: 0,
    max: 604800,
    group: 'Actions',
    help: 'This many seconds after SIGUSR1, send SIGTERM. 0 never sends SIGTERM.',
  },
  {
    key: 'watch.escalate-kill-s',
    env: 'NSA_WATCH_ESCALATE_KILL_S',
    type: 'number',
    default: 0,
    min: 0,
    max: 604800,
    group: 'Actions',
    help: 'This many seconds after SIGTERM, send SIGKILL if the trainer still runs (the NSA trainer catches SIGTERM, dumps stacks and runs on). 0 never sends SIGKILL.',
  },
  {
    key: 'watch.auto-clear-halt',
    env: 'NSA_WATCH_AUTO_CLEAR_HALT',
    type: 'bool',
    default: false,
    group: 'Actions',
    help: 'Once the trainer that a .HALT written by trainwatch addressed has exited, remove that .HALT (audited), so an automated restart trains instead of stopping at step 1.',
  },
  // Notifications
  {
    key: 'notify.exec',
    env: 'TRAINWATCH_NOTIFY_EXEC',
    type: 'string',
    default: undefined,
    arg: 'command',
    group: 'Notifications',
    help: 'Run this command once when an episode opens (docs/notifications.md): split into words (\'…\' and "…" quote), run without a shell, with TRAINWATCH_RUN, _DIR, _KIND, _RANK, _MESSAGE, _SEVERITY, _HALTED, _STATE and _EVENT in its environment.',
  },
  {
    key: 'notify.shell',
    type: 'bool',
    default: false,
    group: 'Notifications',
    help: 'Run --notify.exec through /bin/sh -c (pipes, redirections); the values still only travel in the environment.',
  },
  {
    key: 'notify.on-resolve',
    env: 'TRAINWATCH_NOTIFY_ON_RESOLVE',
    type: 'bool',
    default: false,
    group: 'Notifications',
    help: 'Also notify when an episode ends (TRAINWATCH_EVENT=resolved).',
  },
  {
    key: 'notify.exec-timeout-s',
    type: 'number',
    default: 30,
    min: 0.1,
    max: 3600,
    group: 'Notifications',
    help: 'A notification command still running after this many seconds is killed (SIGKILL to its process group) and counted as timeout.',
  },
  {
    key: 'notify.exec-concurrency',
    type: 'int',
    default: 2,
    min: 1,
    max: 64,
    group: 'Notifications',
    help: 'At most this many notification commands run at once; the others wait in the queue.',
  },
  {
    key: 'notify.queue',
    type: 'int',
    default: 100,
    min: 1,
    max: 100000,
    group: 'Notifications',
    help: 'Notifications waiting per channel (the command, each webhook URL); beyond this the oldest is dropped and counted (result dropped).',
  },
  {
    key: 'notify.webhook',
    env: 'TRAINWATCH_NOTIFY_WEBHOOK',
    type: 'list',
    default: [],
    arg: 'url',
    group: 'Notifications',
    help: 'POST a JSON event to this URL once when an episode opens (repeatable; env: comma-separated).',
  },
  {
    key: 'notify.webhook-format',
    env: 'TRAINWATCH_NOTIFY_WEBHOOK_FORMAT',
    type: 'enum',
    choices: ['json', 'slack'],
    default: 'json',
    group: 'Notifications',
    help: 'json: the event object of docs/notifications.md. slack: {"text": "…"} for Slack-compatible incoming webhooks.',
  },
  {
    key: 'notify.webhook-token-file',
    env: 'TRAINWATCH_NOTIFY_WEBHOOK_TOKEN_FILE',
    type: 'string',
    default: undefined,
    arg: 'file',
    group: 'Notifications',
    help: 'File holding a bearer token sent as Authorization: Bearer <token> (credentials never go in a flag).',
  },
  { key: 'notify.webhook-timeout-s', type: 'number', default: 10, min: 0.1, max: 600, group: 'Notifications', help: 'One webhook request may take this long.' },
  {
    key: 'notify.webhook-retries',
    type: 'int',
    default: 5,
    min: 0,
    max: 100,
    group: 'Notifications',
    help: 'Retries of a delivery answered 5xx (or not at all), with exponential backoff; 4xx is not retried.',
  },
  {
    key: 'notify.webhook-backoff-s',
    type: 'number',
    default: 1,
    min: 0.01,
    max: 3600,
    group: 'Notifications',
    help: 'The first retry waits this long; each further retry twice as long (at most 5 minutes).',
  },
  // Web
  {
    key: 'web.listen-address',
    env: 'TRAINWATCH_WEB_LISTEN_ADDRESS',
    type: 'string',
    default: ':9465',
    arg: 'host:port',
    group: 'Web',
    help: 'Address to serve /metrics, the status page and the webhook on (port 0 picks a free port).',
  },
  { key: 'web.telemetry-path', type: 'string', default: '/metrics', arg: 'path', group: 'Web', help: 'Path under which to expose metrics.' },
  {
    key: 'web.config.file',
    type: 'string',
    default: undefined,
    arg: 'file',
    group: 'Web',
    help: 'exporter-toolkit web config YAML: tls_server_config, basic_auth_users (bcrypt), http_server_config.headers.',
  },
  {
    key: 'webhook.token-file',
    env: 'TRAINWATCH_WEBHOOK_TOKEN_FILE',
    type: 'string',
    default: undefined,
    arg: 'file',
    group: 'Web',
    help: 'File holding the bearer token Alertmanager sends (its authorization.credentials_file).',
  },
  {
    key: 'webhook.allow-unauthenticated',
    type: 'bool',
    default: false,
    group: 'Web',
    help: 'Serve POST /webhook/alertmanager with no auth at all. Without this or an auth setting, the webhook is disabled.',
  },
  {
    key: 'webhook.instance',
    env: 'TRAINWATCH_WEBHOOK_INSTANCE',
    type: 'string',
    default: undefined,
    arg: 'host:port',
    group: 'Web',
    help: 'Act only on alerts whose instance label is this (or that have none). Unset: act on any alert naming a run watched here.',
  },
  {
    key: 'web.request-timeout-s',
    type: 'number',
    default: 15,
    min: 0.5,
    max: 3600,
    group: 'Web',
    help: 'A request (headers and body) must arrive within this many seconds, so slow or stalled clients cannot hold connections.',
  },
  {
    key: 'web.max-connections',
    type: 'int',
    default: 512,
    min: 1,
    max: 1000000,
    group: 'Web',
    help: 'At most this many HTTP connections are open at once; more are closed at once and counted. Bounds the file descriptors clients can take from the tails and control-file writes.',
  },
  {
    key: 'web.keep-alive-timeout-s',
    type: 'number',
    default: 15,
    min: 0.1,
    max: 3600,
    group: 'Web',
    help: "An idle keep-alive connection is closed after this many seconds. Behind a load balancer, set it above the balancer's idle timeout.",
  },
  { key: 'webhook.max-body-bytes', type: 'int', default: 1048576, min: 1024, max: 1073741824, group: 'Web', help: 'Larger webhook bodies get 413.' },
  // Tailing
  {
    key: 'poll',
    env: 'CHOKIDAR_USEPOLLING',
    type: 'bool',
    default: false,
    group: 'Tailing',
    help: 'Poll files instead of inotify: needed on NFS and Lustre, where inotify sees no remote writes.',
  },
  {
    key: 'tail.sweep-interval-s',
    env: 'TRAINWATCH_SWEEP_INTERVAL_S',
    type: 'number',
    default: 2,
    min: 0.05,
    max: 3600,
    group: 'Tailing',
    help: 'Every this many seconds every file is stat()ed and runs are re-discovered; file events only make it sooner.',
  },
  {
    key: 'tail.event-coalesce-ms',
    env: 'TRAINWATCH_EVENT_COALESCE_MS',
    type: 'int',
    default: 250,
    min: 0,
    max: 10000,
    group: 'Tailing',
    help: 'A file that changed within this many ms of its last read waits for one read at the end of the window: a busy file costs a few reads a second, not one per record. Adds at most this much to detection.',
  },
  {
    key: 'tail.busy-events',
    type: 'int',
    default: 8,
    min: 0,
    max: 1000000,
    group: 'Tailing',
    help: 'A run directory with more appends than this within one tail.event-coalesce-ms window is polled every window instead of woken by each append (a run of 8 ranks at 10 records/s: 80 wake-ups a second become 4). It goes back to file events when a file in it is created, renamed or deleted (seen at the next poll), or after 8 polls that read nothing. 0 keeps every run on file events.',
  },
  {
    key: 'tail.startup-bytes',
    type: 'int',
    default: 262144,
    min: 4096,
    max: 1073741824,
    group: 'Tailing',
    help: 'On startup, read this many bytes from the end of each existing file, doubling (up to 64x) while a streak reaches back past the window.',
  },
  {
    key: 'tail.max-line-bytes',
    type: 'int',
    default: 1048576,
    min: 1024,
    max: 268435456,
    group: 'Tailing',
    help: 'Longer lines are skipped and counted as line_too_long.',
  },
  {
    key: 'tail.parse-thread-bytes',
    type: 'int',
    default: 4194304,
    min: 0,
    max: 1073741824,
    group: 'Tailing',
    help: 'A read of at least this many bytes (a backlog) is parsed on a second thread as well as the main one, for a faster catch-up; lines are still applied in file order. 0 keeps all parsing on the main thread.',
  },
  // Logging
  {
    key: 'log.level',
    env: 'TRAINWATCH_LOG_LEVEL',
    type: 'enum',
    choices: ['debug', 'info', 'warn', 'error'],
    default: 'info',
    group: 'Logging',
    help: 'Only log messages with the given severity or above.',
  },
  {
    key: 'log.format',
    env: 'TRAINWATCH_LOG_FORMAT',
    type: 'enum',
    choices: ['logfmt', 'json'],
    default: 'logfmt',
    group: 'Logging',
    help: 'Output format of log messages.',
  },
  {
    key: 'config',
    env: 'TRAINWATCH_CONFIG',
    type: 'string',
    default: undefined,
    arg: 'file',
    group: 'Watch',
    help: 'YAML file with any of these settings (keys as the flag names; dots may be nested maps).',
  },
] as const satisfies readonly Setting[];

export type SettingKey = (typeof SETTINGS)[number]['key'];

/** The value type a setting resolves to, from its table entry. */
type ValueOf<S> = S extends { type: 'list' }
  ? string[]
  : S extends { type: 'number' | 'int' }
    ? number
    : S extends { type: 'bool' }
      ? boolean
      : S extends { type: 'enum'; choices: readonly (infer C)[] }
        ? C
        : S extends { type: 'string'; default: string }
          ? string
          : string | undefined;

/** Resolved values, keyed by setting key; derived from SETTINGS, so a new row is a new field. */
export type Config = { [S in (typeof SETTINGS)[number] as S['key']]: ValueOf<S> } & {
  /** the config file's `profiles:` section (config/profiles.ts); not a flag */
  profiles: Record<string, ProfileValues>;
};

/** The detection thresholds, as the pure detector takes them. */
export interface Thresholds {
  stallS: number;
  flatlineN: number;
  lossFlatlineN: number;
  gradZeroN: number;
  fetchStallRatio: number;
  fetchWarmupN: number;
  gateCollapseN: number;
  gateEntropyMin: number;
  gateMaxThreshold: number;
  gateCollapseFrac: number;
  nonfiniteN: number;
  startupGraceS: number;
  stragglerSteps: number;
  crashDetect: boolean;
}

/** Picks the thresholds out of a config. */
export function thresholdsOf(c: Config): Thresholds {
  return {
    stallS: c['watch.heartbeat-stall-s'],
    flatlineN: c['watch.flatline-n'],
    lossFlatlineN: c['watch.loss-flatline-n'],
    gradZeroN: c['watch.grad-zero-n'],
    fetchStallRatio: c['watch.fetch-stall-ratio'],
    fetchWarmupN: c['watch.fetch-warmup-n'],
    gateCollapseN: c['watch.gate-collapse-n'],
    gateEntropyMin: c['watch.gate-entropy-min'],
    gateMaxThreshold: c['watch.gate-max-threshold'],
    gateCollapseFrac: c['watch.gate-collapse-frac'],
    nonfiniteN: c['watch.nonfinite-n'],
    startupGraceS: c['watch.startup-grace-s'],
    stragglerSteps: c['watch.straggler-steps'],
    crashDetect: c['watch.crash-detect'],
  };
}

/** The setting an alias or key names (e.g. `interval` → `watch.interval-s`), or undefined. */
export function settingFor(name: string): Setting | undefined {
  return (SETTINGS as readonly Setting[]).find((s) => s.key === name || s.aliases?.includes(name));
}

/** The default config (every setting at its default). */
export function defaultConfig(): Config {
  const out: Record<string, unknown> = {};
  for (const s of SETTINGS as readonly Setting[]) out[s.key] = Array.isArray(s.default) ? [...s.default] : s.default;
  out.profiles = {};
  // The one cast: each default is of its row's type (the table's `satisfies` and config.test.ts).
  return out as Config;
}
