// The Prometheus alert rules: promtool accepts them and their unit tests pass, the checked-in
// file is exactly the generator's output, and every anomaly kind has its alert.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { ANOMALY_KINDS } from '../src/detect/kinds.js';
import { ALERTS_FILE, buildAlertRules, renderAlertRules, type AlertRule, type RulesDocument } from '../src/gen/alerts.js';
import { OVER_STATES, RUN_STATES } from '../src/state/lifecycle.js';
import { REPO, requireBinary } from './helpers/proc.js';

const RULES = join(REPO, ALERTS_FILE);
const TESTS_DIR = join(REPO, 'alerts/tests');
const testFiles = () =>
  readdirSync(TESTS_DIR)
    .filter((n) => n.endsWith('.yml'))
    .sort()
    .map((n) => join('alerts/tests', n));

function promtool(args: string[]): { status: number | null; output: string } {
  requireBinary('promtool', 'prometheus');
  const r = spawnSync('promtool', args, { cwd: REPO, encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

const checkedIn = (): RulesDocument => parse(readFileSync(RULES, 'utf8')) as RulesDocument;
const allRules = (doc: RulesDocument): AlertRule[] => doc.groups.flatMap((g) => g.rules);

test('promtool check rules accepts alerts/trainwatch.rules.yml', () => {
  const r = promtool(['check', 'rules', ALERTS_FILE]);
  assert.equal(0, r.status, r.output);
});

test('promtool test rules passes every unit test in alerts/tests', () => {
  const files = testFiles();
  assert.ok(files.length > 0, 'no alerts/tests/*.yml');
  const r = promtool(['test', 'rules', ...files]);
  assert.equal(0, r.status, `promtool test rules failed:\n${r.output}`);
});

test('the checked-in rules file is exactly what the generator writes (run `npm run gen` after changing a list)', () => {
  assert.equal(renderAlertRules(), readFileSync(RULES, 'utf8'));
});

test('every anomaly kind has exactly one alert, with its anomaly_type, halt and severity labels', () => {
  const rules = allRules(checkedIn());
  for (const k of ANOMALY_KINDS) {
    const mine = rules.filter((r) => r.labels.anomaly_type === k.name);
    assert.equal(1, mine.length, `alerts with anomaly_type="${k.name}"`);
    const r = mine[0];
    assert.deepEqual(
      { alert: k.alert, severity: k.severity, anomaly_type: k.name, halt: String(k.halts), summary: k.summary },
      { alert: r.alert, severity: r.labels.severity, anomaly_type: r.labels.anomaly_type, halt: r.labels.halt, summary: r.annotations.summary },
    );
  }
  const kindAlerts = new Set<string>(ANOMALY_KINDS.map((k) => k.alert));
  const extras = rules.filter((r) => !kindAlerts.has(r.alert));
  assert.deepEqual(
    [],
    extras.filter((r) => r.labels.anomaly_type !== undefined).map((r) => r.alert),
    'only anomaly kinds carry anomaly_type (the webhook acts on it)',
  );
});

test('every alert has a unique CamelCase name, a known severity and summary, description and runbook_url', () => {
  const rules = allRules(buildAlertRules());
  assert.equal(rules.length, new Set(rules.map((r) => r.alert)).size, 'duplicate alert names');
  for (const r of rules) {
    assert.match(r.alert, /^(Training|Trainwatch)[A-Z][A-Za-z]+$/, r.alert);
    assert.ok(['critical', 'warning', 'info'].includes(r.labels.severity), `${r.alert} severity ${r.labels.severity}`);
    assert.deepEqual(['description', 'runbook_url', 'summary'], Object.keys(r.annotations).sort(), r.alert);
  }
});

test('every runbook_url points at a heading of docs/runbook.md', () => {
  const runbook = readFileSync(join(REPO, 'docs/runbook.md'), 'utf8');
  // GitHub's anchor for a heading: lower-cased, spaces to dashes, punctuation dropped.
  const anchors = new Set(
    [...runbook.matchAll(/^#{1,6} (.+)$/gm)].map((m) =>
      m[1]
        .trim()
        .toLowerCase()
        .replace(/[^\w\- ]/g, '')
        .replace(/ /g, '-'),
    ),
  );
  for (const r of allRules(checkedIn())) {
    const anchor = r.annotations.runbook_url.split('#')[1];
    assert.equal(true, anchors.has(anchor), `${r.alert}: no heading for #${anchor} in docs/runbook.md`);
  }
});

/** Alert names asserted firing and asserted silent in the given promtool test files. */
function asserted(files: string[]): { firing: Set<string>; silent: Set<string> } {
  const firing = new Set<string>();
  const silent = new Set<string>();
  for (const f of files) {
    const doc = parse(readFileSync(join(REPO, f), 'utf8')) as { tests: { alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[] };
    for (const t of doc.tests) {
      for (const a of t.alert_rule_test ?? []) (a.exp_alerts && a.exp_alerts.length > 0 ? firing : silent).add(a.alertname);
    }
  }
  return { firing, silent };
}

test('every alert has promtool tests asserting it both firing and silent', () => {
  const { firing, silent } = asserted(testFiles());
  for (const r of allRules(checkedIn())) {
    assert.equal(true, firing.has(r.alert), `${r.alert} is never asserted firing`);
    assert.equal(true, silent.has(r.alert), `${r.alert} is never asserted silent`);
  }
});

test('every anomaly alert is silenced by exactly the lifecycle states in which the trainer is over', () => {
  const gate = `unless on(job, instance, run)\n  trainwatch_run_state{state=~"${[...OVER_STATES].join('|')}"} == 1`;
  for (const k of ANOMALY_KINDS) {
    const r = allRules(checkedIn()).find((x) => x.alert === k.alert)!;
    assert.equal(true, r.expr.endsWith(gate), `${k.alert} does not end with the state gate:\n${r.expr}`);
  }
});

test('every state the rules name is a state the exporter exports (a misspelt state would silently disable a gate)', () => {
  const known = new Set<string>(RUN_STATES);
  for (const r of allRules(checkedIn())) {
    for (const m of r.expr.matchAll(/\bstate=~?"([^"]*)"/g)) {
      for (const st of m[1].split('|')) assert.equal(true, known.has(st), `${r.alert} names state "${st}", not one of ${RUN_STATES.join(', ')}`);
    }
  }
});

test('every anomaly alert is asserted both firing and silent in the state-gating tests of alerts/tests/states.yml', () => {
  const { firing, silent } = asserted(['alerts/tests/states.yml']);
  for (const k of ANOMALY_KINDS) {
    assert.equal(true, firing.has(k.alert), `${k.alert} is never asserted firing in states.yml`);
    assert.equal(true, silent.has(k.alert), `${k.alert} is never asserted silent in states.yml`);
  }
});
