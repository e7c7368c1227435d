// Generates alerts/trainwatch.rules.yml, the Prometheus alert rules, from the one list of
// anomaly kinds (src/detect/kinds.ts), the one table of settings (src/config/settings.ts) and
// the one list of metric names (src/metrics/names.ts).
//
// Thresholds have one source of truth: the exporter exposes the thresholds in force as
// trainwatch_threshold_*{run} gauges (each run's own, from its profile: config/profiles.ts), and
// every streak and ratio rule joins on them with `on(job, instance, run) group_left()`. Each join carries an `or` default (the Robust Perception
// pattern), and that default literal is the SETTINGS default, so a missing gauge neither
// silences an alert nor introduces a second number. A threshold of 0 disables its rule, exactly
// like the embedded detector (src/detect/detect.ts), whose comparisons the rules copy: streaks
// fire at `>=`, the fetch ratio at `>`. The stall rule joins no threshold: the exporter applies
// the liveness rules and exports each rank's deadline, and the rule fires strictly past it.
// Every training alert is silent while the run's lifecycle state is over (halted, finished,
// expired: trainwatch_run_state); a run without that state set still alerts.
// docs/alerts.md explains the design; docs/runbook.md has one section per alert.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Document } from 'yaml';
import { SETTINGS, type SettingKey } from '../config/settings.js';
import { ANOMALY_KINDS, type AnomalyName } from '../detect/kinds.js';
import { METRICS, type MetricKey } from '../metrics/names.js';
import { OVER_STATES } from '../state/lifecycle.js';

/** Where the generated rules live, relative to the repository root. */
export const ALERTS_FILE = 'alerts/trainwatch.rules.yml';

/**
 * Where runbook_url annotations point by default: docs/runbook.md as the trainwatch that the alert
 * is about serves it (http/docs.ts). Prometheus expands the template when the alert fires; the
 * `instance` label is trainwatch's host:port as Prometheus scrapes it.
 */
export const DEFAULT_RUNBOOK_BASE_URL = 'http://{{ $labels.instance }}/docs/runbook';

/** The default label matcher that finds trainwatch's scrape job(s) in `up`. */
export const DEFAULT_JOB_MATCHER = 'job=~".*trainwatch.*"';

/** One Prometheus alerting rule, as written to the YAML file. */
export interface AlertRule {
  alert: string;
  expr: string;
  for: string;
  labels: Record<string, string>;
  annotations: { summary: string; description: string; runbook_url: string };
}

/** A Prometheus rule file. */
export interface RulesDocument {
  groups: { name: string; rules: AlertRule[] }[];
}

/** Generator options. */
export interface AlertOptions {
  /** Label matcher selecting trainwatch's own `up` series (TrainwatchDown). */
  jobMatcher?: string;
  /** The runbook page every runbook_url starts with (`<base>#<anchor>`); DEFAULT_RUNBOOK_BASE_URL if unset. */
  runbookBaseUrl?: string;
}

/** The runbook link for an alert: the anchor of its `## <AlertName>` heading in docs/runbook.md. */
export function runbookUrl(alert: string, base = DEFAULT_RUNBOOK_BASE_URL): string {
  return `${base}#${alert.toLowerCase()}`;
}

/** Why a --runbook-base-url cannot be used, or undefined when it can. */
export function runbookBaseUrlError(base: string): string | undefined {
  if (!/^https?:\/\/\S/.test(base)) return `${JSON.stringify(base)} must start with http:// or https://`;
  if (/[#\n\r]/.test(base)) return `${JSON.stringify(base)} must not contain '#' or a line break: the alert's anchor is appended as #<alert>`;
  return undefined;
}

const m = (k: MetricKey): string => METRICS[k].name;

/** The numeric default of a setting: the literal every `or` default uses. */
function def(key: SettingKey): number {
  const s = SETTINGS.find((x) => x.key === key);
  if (!s || typeof s.default !== 'number') throw new Error(`setting ${key} has no numeric default`);
  return s.default;
}

const indent = (text: string, n: number): string =>
  text
    .split('\n')
    .map((l) => (l === '' ? l : ' '.repeat(n) + l))
    .join('\n');

/**
 * The threshold in force for each run: its gauge (runs on different profiles have different
 * ones), or the SETTINGS default for any run that exposes `base` but not the gauge. `> 0` drops
 * disabled thresholds, so the join finds nothing and the rule is silent, as the detector is.
 */
function threshold(gauge: MetricKey, setting: SettingKey, base: string): string {
  return ['(', `  ${m(gauge)}`, '  or on(job, instance, run)', `  count by (job, instance, run) (${base}) * 0 + ${def(setting)}`, ') > 0'].join('\n');
}

/** `value op threshold`, joined on the run (the gauge carries job, instance and run; the value also rank). */
function vsThreshold(value: string, op: '>=' | '>', gauge: MetricKey, setting: SettingKey): string {
  return [value, `  ${op} on(job, instance, run) group_left()`, '(', indent(threshold(gauge, setting, value), 2), ')'].join('\n');
}

/** Silences an expression for runs that hold a .HALT: the trainer was asked to stop. */
function unlessHalted(expr: string): string {
  return ['(', indent(expr, 2), ')', 'unless on(job, instance, run)', `  ${m('runHalted')} == 1`].join('\n');
}

/** The lifecycle states in which a run's trainer is over: every training alert is silent (state/lifecycle.ts OVER_STATES). */
const OVER = [...OVER_STATES].join('|');

/** Silences an expression for runs whose trainer is over (halted, finished; expired runs have no series at all). */
function unlessOver(expr: string): string {
  return ['(', indent(expr, 2), ')', 'unless on(job, instance, run)', `  ${m('runState')}{state=~"${OVER}"} == 1`].join('\n');
}

const RANK = 'rank {{ $labels.rank }} of run {{ $labels.run }}';
const RANK_UC = 'Rank {{ $labels.rank }} of run {{ $labels.run }}';

/** The expression and description of each anomaly kind's alert. Keyed by name, so none is forgotten. */
function kindRules(): Record<AnomalyName, { expr: string; description: string }> {
  // The exporter applies the liveness rules (roles, startup grace, dumps, acknowledgements,
  // exited trainers) and exports each rank's deadline; the rule only compares it with time(),
  // so Prometheus and the embedded detector judge silence identically.
  const heartbeat = unlessHalted(`time() - ${m('stallDeadline')} > 0`);
  const csv = m('csvFlatline');
  const throughput = [
    '# per rank, from progress records',
    '(',
    indent(vsThreshold(m('throughputFlatline'), '>=', 'thFlatline', 'watch.flatline-n'), 2),
    ')',
    'or',
    '# training.csv (written by rank 0), as the original watchdog read it',
    'label_replace(',
    indent(vsThreshold(csv, '>=', 'thFlatline', 'watch.flatline-n'), 2) + ',',
    '  "rank", "0", "", ""',
    ')',
  ].join('\n');
  return {
    heartbeat_stall: {
      expr: heartbeat,
      description: `${RANK_UC} is {{ $value | humanizeDuration }} past its stall deadline: silent longer than its stall threshold, or the trainer's own watchdog dumped stacks (a hung training loop). See trainwatch's status page for which rule applied.`,
    },
    throughput_flatline: {
      expr: throughput,
      description: `${RANK_UC} reported toks_per_s <= 0 in {{ $value }} progress records (or training.csv rows) in a row.`,
    },
    loss_flatline: {
      expr: vsThreshold(m('lossFlatline'), '>=', 'thLossFlatline', 'watch.loss-flatline-n'),
      description: `${RANK_UC} logged the identical loss in {{ $value }} progress records in a row.`,
    },
    zero_grad: {
      expr: vsThreshold(m('gradZero'), '>=', 'thGradZero', 'watch.grad-zero-n'),
      description: `${RANK_UC} logged grad_norm == 0 in {{ $value }} progress records in a row.`,
    },
    fetch_stall: {
      expr: vsThreshold(m('fetchRatio'), '>', 'thFetchRatio', 'watch.fetch-stall-ratio'),
      description: `The newest data fetch of ${RANK} took {{ printf "%.1f" $value }}x its baseline.`,
    },
    gate_collapse: {
      expr: vsThreshold(m('gateCollapse'), '>=', 'thGateCollapse', 'watch.gate-collapse-n'),
      description: `${RANK_UC} logged collapsed NSA gates in {{ $value }} progress records in a row.`,
    },
    nonfinite_loss: {
      expr: vsThreshold(m('nonfinite'), '>=', 'thNonfinite', 'watch.nonfinite-n'),
      description: `${RANK_UC} logged a NaN or infinite loss or grad_norm in {{ $value }} progress records in a row.`,
    },
    straggler: {
      expr: vsThreshold(m('stepLag'), '>=', 'thStraggler', 'watch.straggler-steps'),
      description: `${RANK_UC} is {{ $value }} steps behind the most advanced rank of the run.`,
    },
    trainer_crash: {
      expr: unlessHalted(`${m('trainerUp')} == 0`),
      description: `The trainer process of ${RANK} is gone from the host of {{ $labels.instance }} (trainwatch_trainer_up = {{ $value }}) and no .HALT asked it to stop.`,
    },
  };
}

/** Builds the rules document. Pure: the same inputs always give the same document. */
export function buildAlertRules(opts: AlertOptions = {}): RulesDocument {
  const job = opts.jobMatcher ?? DEFAULT_JOB_MATCHER;
  const specs = kindRules();
  const training: AlertRule[] = ANOMALY_KINDS.map((k) => ({
    alert: k.alert,
    expr: unlessOver(specs[k.name].expr),
    // The embedded detector acts on the first evaluation that crosses a threshold; the
    // thresholds already count records or seconds, so a `for` would only add delay.
    for: '0s',
    labels: { severity: k.severity, anomaly_type: k.name, halt: String(k.halts) },
    annotations: { summary: k.summary, description: specs[k.name].description, runbook_url: runbookUrl(k.alert, opts.runbookBaseUrl) },
  }));
  training.push({
    alert: 'TrainingRunHalted',
    // Only while the trainer still runs: once it stopped (state halted) there is nothing to
    // watch for, and a finished halt must not alert until the run expires.
    expr: `${m('runState')}{state="halt_requested"} == 1`,
    for: '0s',
    labels: { severity: 'info' },
    annotations: {
      summary: 'A training run holds a .HALT file and its trainer has not stopped yet.',
      description:
        'Run {{ $labels.run }} holds a .HALT file, so its trainer stops at its next step; it has not stopped yet. .anomaly_type in the run directory names the reason; delete .HALT before restarting the run.',
      runbook_url: runbookUrl('TrainingRunHalted', opts.runbookBaseUrl),
    },
  });
  const self: AlertRule[] = [
    {
      alert: 'TrainwatchDown',
      expr: `up{${job}} == 0\nor\nabsent(up{${job}})`,
      for: '5m',
      labels: { severity: 'critical' },
      annotations: {
        summary: 'trainwatch cannot be scraped: training runs are not watched by these rules.',
        description: `{{ if $labels.instance }}Prometheus cannot scrape trainwatch at {{ $labels.instance }} (job {{ $labels.job }}).{{ else }}Prometheus has no trainwatch target at all: no up series matches ${job}.{{ end }} Anomalies of the runs it watches raise no alerts.`,
        runbook_url: runbookUrl('TrainwatchDown', opts.runbookBaseUrl),
      },
    },
    {
      alert: 'TrainwatchParseErrors',
      expr: `sum by (job, instance, reason) (\n  increase(${m('parseErrors')}{reason!="blank_line"}[10m])\n) > 0`,
      for: '15m',
      labels: { severity: 'warning' },
      annotations: {
        summary: 'trainwatch keeps failing to parse heartbeat or training.csv lines.',
        description:
          'trainwatch at {{ $labels.instance }} dropped {{ $value | humanize }} lines as {{ $labels.reason }} in the last 10 minutes, and has kept doing so for 15 minutes. Records it cannot parse are invisible to every rule.',
        runbook_url: runbookUrl('TrainwatchParseErrors', opts.runbookBaseUrl),
      },
    },
  ];
  return {
    groups: [
      { name: 'trainwatch-training', rules: training },
      { name: 'trainwatch-self', rules: self },
    ],
  };
}

/** The rules file's text, with its do-not-edit header. */
export function renderAlertRules(opts: AlertOptions = {}): string {
  const doc = new Document(buildAlertRules(opts));
  doc.commentBefore = [
    ' Generated by src/gen/alerts.ts from src/detect/kinds.ts, src/config/settings.ts and',
    ' src/metrics/names.ts. Do not edit: change those and run `npm run gen`.',
    " Thresholds come from the exporter's trainwatch_threshold_* gauges; see docs/alerts.md.",
  ].join('\n');
  return doc.toString({ lineWidth: 0 });
}

/** Writes alerts/trainwatch.rules.yml under `repoRoot`; returns the path written. */
export function writeAlerts(repoRoot: string): string {
  const path = join(repoRoot, ALERTS_FILE);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, renderAlertRules());
  return path;
}
