// The ONE list of metric names, types, labels and help. docs/metrics.md is generated from it
// (npm run gen), and a test checks that the real /metrics output matches it.
//
// The streak gauges end in `_count` because `trainwatch_throughput_flatline_count` is a public
// name. promtool's linter reserves `_count` for histograms and summaries except on untyped
// metrics, so those are declared untyped: the output stays lint-clean and the names stay stable.

/** One exported metric family. */
export interface MetricDef {
  name: string;
  type: 'gauge' | 'counter' | 'untyped';
  labels: readonly string[];
  help: string;
}

const RR = ['run', 'rank'] as const;

export const METRICS = {
  // Per rank, from heartbeats.
  heartbeatLastTs: {
    name: 'trainwatch_heartbeat_last_timestamp_seconds',
    type: 'gauge',
    labels: RR,
    help: 'Trainer timestamp of the newest liveness record (watchdog_dump records excluded).',
  },
  heartbeatAge: {
    name: 'trainwatch_heartbeat_age_seconds',
    type: 'gauge',
    labels: RR,
    help: 'Seconds since the newest liveness record, computed at scrape time.',
  },
  stallThreshold: {
    name: 'trainwatch_heartbeat_stall_threshold_seconds',
    type: 'gauge',
    labels: RR,
    help: 'Stall threshold in force for the rank, raised to the startup grace between boot and first progress.',
  },
  stallDeadline: {
    name: 'trainwatch_stall_deadline_timestamp_seconds',
    type: 'gauge',
    labels: RR,
    help: 'When the rank counts as stalled if nothing new arrives (liveness rules of docs/detection.md); absent when its silence is not judged.',
  },
  dumpLastTs: {
    name: 'trainwatch_watchdog_dump_last_timestamp_seconds',
    type: 'gauge',
    labels: RR,
    help: 'Trainer timestamp of the newest watchdog_dump record (the trainer saw its own loop hang).',
  },
  bootTs: { name: 'trainwatch_boot_timestamp_seconds', type: 'gauge', labels: RR, help: 'Trainer timestamp of the newest boot record.' },
  progressLastTs: {
    name: 'trainwatch_progress_last_timestamp_seconds',
    type: 'gauge',
    labels: RR,
    help: 'Trainer timestamp of the newest progress record since the last boot.',
  },
  step: { name: 'trainwatch_step', type: 'gauge', labels: RR, help: 'Newest training step.' },
  stepChangeTs: { name: 'trainwatch_step_last_change_timestamp_seconds', type: 'gauge', labels: RR, help: 'Trainer timestamp at which the step last changed.' },
  stepLag: {
    name: 'trainwatch_step_lag',
    type: 'gauge',
    labels: RR,
    help: "Steps behind the most advanced rank of the same run, compared at this rank's newest record time.",
  },
  toks: { name: 'trainwatch_tokens_per_second', type: 'gauge', labels: RR, help: 'Global tokens per second from the newest progress record.' },
  throughputFlatline: { name: 'trainwatch_throughput_flatline_count', type: 'untyped', labels: RR, help: 'Consecutive progress records with toks_per_s <= 0.' },
  loss: { name: 'trainwatch_loss', type: 'gauge', labels: RR, help: 'Training loss from the newest progress record (NaN when the run diverged).' },
  lossFlatline: { name: 'trainwatch_loss_flatline_count', type: 'untyped', labels: RR, help: 'Consecutive progress records with the identical loss.' },
  gradNorm: { name: 'trainwatch_grad_norm', type: 'gauge', labels: RR, help: 'Gradient norm from the newest progress record.' },
  gradZero: { name: 'trainwatch_grad_zero_count', type: 'untyped', labels: RR, help: 'Consecutive progress records with grad_norm == 0.' },
  nonfinite: {
    name: 'trainwatch_nonfinite_count',
    type: 'untyped',
    labels: RR,
    help: 'Consecutive progress records with a NaN or infinite loss or grad_norm.',
  },
  fetch: { name: 'trainwatch_data_fetch_seconds', type: 'gauge', labels: RR, help: 'Data fetch time from the newest progress record.' },
  fetchBaseline: {
    name: 'trainwatch_data_fetch_baseline_seconds',
    type: 'gauge',
    labels: RR,
    help: 'Baseline data fetch time that fetch stalls are measured against.',
  },
  fetchRatio: {
    name: 'trainwatch_data_fetch_baseline_ratio',
    type: 'gauge',
    labels: RR,
    help: 'Newest data fetch time divided by its baseline; absent during the warm-up.',
  },
  gpuAlloc: { name: 'trainwatch_gpu_memory_allocated_bytes', type: 'gauge', labels: RR, help: 'GPU memory allocated by the trainer.' },
  gpuReserved: { name: 'trainwatch_gpu_memory_reserved_bytes', type: 'gauge', labels: RR, help: "GPU memory reserved by the trainer's caching allocator." },
  gateEntropyMean: { name: 'trainwatch_gate_entropy_mean', type: 'gauge', labels: RR, help: 'Mean NSA gate entropy.' },
  gateEntropyMin: { name: 'trainwatch_gate_entropy_min', type: 'gauge', labels: RR, help: 'Minimum NSA gate entropy.' },
  gateMax: { name: 'trainwatch_gate_max_ratio', type: 'gauge', labels: RR, help: 'Largest NSA gate value.' },
  gateCollapseFrac: { name: 'trainwatch_gate_collapse_ratio', type: 'gauge', labels: RR, help: 'Fraction of NSA gates that collapsed.' },
  gateCollapse: { name: 'trainwatch_gate_collapse_count', type: 'untyped', labels: RR, help: 'Consecutive progress records with collapsed gates.' },
  records: {
    name: 'trainwatch_records_total',
    type: 'counter',
    labels: ['run', 'rank', 'msg'],
    help: 'Heartbeat records read, by msg kind (unknown kinds count as other).',
  },
  trainerUp: {
    name: 'trainwatch_trainer_up',
    type: 'gauge',
    labels: RR,
    help: 'Whether the trainer pid is alive on this host (only with crash detection, and where watch.pid-check can see it).',
  },
  anomaly: {
    name: 'trainwatch_anomaly',
    type: 'gauge',
    labels: ['run', 'rank', 'anomaly_type'],
    help: 'Anomalies the embedded detector sees now: 1 while active, absent otherwise.',
  },
  // Per run.
  runHalted: { name: 'trainwatch_run_halted', type: 'gauge', labels: ['run'], help: 'Whether the run directory holds a .HALT file.' },
  runState: {
    name: 'trainwatch_run_state',
    type: 'gauge',
    labels: ['run', 'state'],
    help: "The run's lifecycle state as a state set: 1 for the current state, 0 for the others (docs/detection.md).",
  },
  runAttempts: {
    name: 'trainwatch_run_attempts_total',
    type: 'counter',
    labels: ['run'],
    help: 'Trainer attempts (a new process writing boot) this trainwatch has seen in the run.',
  },
  runRanks: { name: 'trainwatch_run_ranks', type: 'gauge', labels: ['run'], help: 'Ranks seen in the run.' },
  csvStep: { name: 'trainwatch_csv_step', type: 'gauge', labels: ['run'], help: 'Newest step in training.csv.' },
  csvToks: { name: 'trainwatch_csv_tokens_per_second', type: 'gauge', labels: ['run'], help: 'Tokens per second from the newest training.csv row.' },
  csvLoss: { name: 'trainwatch_csv_loss', type: 'gauge', labels: ['run'], help: 'Loss from the newest training.csv row.' },
  csvFlatline: {
    name: 'trainwatch_csv_throughput_flatline_count',
    type: 'untyped',
    labels: ['run'],
    help: 'Consecutive training.csv rows with toks_per_s <= 0.',
  },
  // Thresholds in force (the same numbers the embedded detector uses; rules join on them).
  thStall: {
    name: 'trainwatch_threshold_heartbeat_stall_seconds',
    type: 'gauge',
    labels: ['run'],
    help: 'NSA_WATCH_HEARTBEAT_STALL_S in force for the run, from its profile.',
  },
  thGrace: {
    name: 'trainwatch_threshold_startup_grace_seconds',
    type: 'gauge',
    labels: ['run'],
    help: 'NSA_WATCH_STARTUP_GRACE_S in force for the run, from its profile.',
  },
  thFlatline: {
    name: 'trainwatch_threshold_throughput_flatline_records',
    type: 'gauge',
    labels: ['run'],
    help: 'NSA_WATCH_FLATLINE_N in force for the run, from its profile.',
  },
  thLossFlatline: {
    name: 'trainwatch_threshold_loss_flatline_records',
    type: 'gauge',
    labels: ['run'],
    help: 'NSA_WATCH_LOSS_FLATLINE_N in force for the run, from its profile (0 disables).',
  },
  thGradZero: {
    name: 'trainwatch_threshold_grad_zero_records',
    type: 'gauge',
    labels: ['run'],
    help: 'NSA_WATCH_GRAD_ZERO_N in force for the run, from its profile (0 disables).',
  },
  thNonfinite: {
    name: 'trainwatch_threshold_nonfinite_records',
    type: 'gauge',
    labels: ['run'],
    help: 'NSA_WATCH_NONFINITE_N in force for the run, from its profile (0 disables).',
  },
  thFetchRatio: {
    name: 'trainwatch_threshold_fetch_stall_ratio',
    type: 'gauge',
    labels: ['run'],
    help: 'NSA_WATCH_FETCH_STALL_RATIO in force for the run, from its profile (0 disables).',
  },
  thGateCollapse: {
    name: 'trainwatch_threshold_gate_collapse_records',
    type: 'gauge',
    labels: ['run'],
    help: 'NSA_WATCH_GATE_COLLAPSE_N in force for the run, from its profile (0 disables).',
  },
  thGateEntropyMin: {
    name: 'trainwatch_threshold_gate_entropy_min',
    type: 'gauge',
    labels: ['run'],
    help: 'NSA_WATCH_GATE_ENTROPY_MIN in force for the run, from its profile: lower mean gate entropy marks a record collapsed.',
  },
  thGateMax: {
    name: 'trainwatch_threshold_gate_max_ratio',
    type: 'gauge',
    labels: ['run'],
    help: 'NSA_WATCH_GATE_MAX_THRESHOLD in force for the run, from its profile: a larger gate value marks a record collapsed.',
  },
  thGateFrac: {
    name: 'trainwatch_threshold_gate_collapse_ratio',
    type: 'gauge',
    labels: ['run'],
    help: 'NSA_WATCH_GATE_COLLAPSE_FRAC in force for the run, from its profile: a larger collapsed fraction marks a record collapsed.',
  },
  thStraggler: {
    name: 'trainwatch_threshold_straggler_steps',
    type: 'gauge',
    labels: ['run'],
    help: 'NSA_WATCH_STRAGGLER_STEPS in force for the run, from its profile (0 disables).',
  },
  runProfile: {
    name: 'trainwatch_run_profile',
    type: 'gauge',
    labels: ['run', 'profile'],
    help: "The threshold profile a run is judged by (always 1; 'default' when no run.profile glob matched).",
  },
  haltEnabled: { name: 'trainwatch_halt_enabled', type: 'gauge', labels: [], help: 'Whether this trainwatch writes .HALT (NSA_WATCH_HALT or --halt).' },
  embeddedActions: {
    name: 'trainwatch_embedded_actions_enabled',
    type: 'gauge',
    labels: [],
    help: 'Whether the embedded detector acts (mode embedded) or Alertmanager decides (mode alertmanager).',
  },
  // Self-metrics.
  buildInfo: { name: 'trainwatch_build_info', type: 'gauge', labels: ['version', 'nodejs_version', 'mode'], help: 'Build information; the value is always 1.' },
  runsWatched: {
    name: 'trainwatch_runs_watched',
    type: 'gauge',
    labels: [],
    help: 'Run directories being watched that have not expired (expired runs are still polled for a new record).',
  },
  filesWatched: { name: 'trainwatch_files_watched', type: 'gauge', labels: [], help: 'Heartbeat and training.csv files being tailed.' },
  filesOpen: { name: 'trainwatch_files_open', type: 'gauge', labels: [], help: 'File handles held open by tails.' },
  fdBudget: {
    name: 'trainwatch_tail_descriptor_budget',
    type: 'gauge',
    labels: [],
    help: 'Descriptors the tails may hold at once: the open-files limit less web.max-connections and a reserve of 256 for control files and the rest. Beyond it tails read and close.',
  },
  fdDeferred: {
    name: 'trainwatch_tail_opens_deferred_total',
    type: 'counter',
    labels: [],
    help: 'Opens of a heartbeat file put off to the next poll because the tails had spent their descriptor budget (nothing is lost: the file is read at that poll).',
  },
  runsPolled: {
    name: 'trainwatch_runs_polled',
    type: 'gauge',
    labels: [],
    help: 'Busy run directories whose files are polled every tail.event-coalesce-ms instead of read on each append (see tail.busy-events).',
  },
  pollingFallback: {
    name: 'trainwatch_watch_polling_fallback',
    type: 'gauge',
    labels: [],
    help: 'Whether inotify failed (e.g. watches exhausted) and file events fell back to polling.',
  },
  parseErrors: { name: 'trainwatch_parse_errors_total', type: 'counter', labels: ['reason'], help: 'Lines that did not become records, by reason.' },
  bytesRead: { name: 'trainwatch_read_bytes_total', type: 'counter', labels: [], help: 'Bytes read from heartbeat and training.csv files.' },
  linesRead: { name: 'trainwatch_lines_read_total', type: 'counter', labels: [], help: 'Complete lines read from heartbeat and training.csv files.' },
  runsExpired: {
    name: 'trainwatch_runs_expired_total',
    type: 'counter',
    labels: [],
    help: 'Runs dropped because their directory went away (runs idle past run.ttl-s are expired, not dropped, and not counted here).',
  },
  actions: { name: 'trainwatch_actions_total', type: 'counter', labels: ['action', 'result'], help: 'Control-file writes and signals, by action and result.' },
  auditErrors: {
    name: 'trainwatch_audit_errors_total',
    type: 'counter',
    labels: ['reason'],
    help: 'Audit-log reads, appends and rotations that failed, by reason; trainwatch acts anyway.',
  },
  auditRotations: {
    name: 'trainwatch_audit_rotations_total',
    type: 'counter',
    labels: [],
    help: 'Audit logs rotated to .trainwatch-audit.jsonl.1 (at 4 MiB), each new file starting with a checkpoint.',
  },
  webhookRequests: { name: 'trainwatch_webhook_requests_total', type: 'counter', labels: ['code'], help: 'Webhook requests, by HTTP status code.' },
  notifications: {
    name: 'trainwatch_notifications_total',
    type: 'counter',
    labels: ['channel', 'result'],
    help: 'Episode notifications by channel (exec, webhook) and result (ok, failed, timeout, retry, dropped).',
  },
  webhookAlerts: {
    name: 'trainwatch_webhook_alerts_total',
    type: 'counter',
    labels: ['result'],
    help: 'Alerts received on the webhook, by what was done with them.',
  },
  httpConnections: { name: 'trainwatch_http_connections', type: 'gauge', labels: [], help: 'Open HTTP connections (at most web.max-connections).' },
  httpConnectionsRefused: {
    name: 'trainwatch_http_connections_refused_total',
    type: 'counter',
    labels: ['reason'],
    help: 'Connections closed unserved: max_connections (web.max-connections reached), client_cert (client_auth_type not met after the handshake) or tls_handshake (the TLS handshake failed).',
  },
  basicAuth: {
    name: 'trainwatch_http_basic_auth_total',
    type: 'counter',
    labels: ['result'],
    help: 'Basic-auth checks by result: accepted, rejected, or throttled (too many bcrypt comparisons at once, answered 503).',
  },
  basicAuthBcrypt: {
    name: 'trainwatch_http_basic_auth_bcrypt_total',
    type: 'counter',
    labels: [],
    help: 'bcrypt comparisons run for basic auth (checks not answered from the cache).',
  },
} as const satisfies Record<string, MetricDef>;

export type MetricKey = keyof typeof METRICS;
