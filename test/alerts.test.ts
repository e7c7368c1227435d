// The Prometheus alert rules: promtool accepts them and their unit tests pass, the checked-in
// file is exactly the generator's output, and every anomaly kind has its alert.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { ANOMALY_KINDS } from '../src/detect/kinds.js';
import { ALERTS_FILE, buildAlertRules, DEFAULT_RUNBOOK_BASE_URL, renderAlertRules, type AlertRule, type RulesDocument } from '../src/gen/alerts.js';
import { docHtml, loadDocs } from '../src/http/docs.js';
import { OVER_STATES, RUN_STATES } from '../src/state/lifecycle.js';
import { BIN, REPO, requireBinary, tmpDir } from './helpers/proc.js';

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

test('every runbook_url is the default runbook page plus the anchor of a heading that trainwatch serves at /docs/runbook', () => {
  // The ids of the page trainwatch serves (http/docs.ts), made from docs/runbook.md's headings.
  const page = docHtml('runbook', loadDocs(join(REPO, 'docs')));
  const ids = new Set([...page.matchAll(/<h\d id="([^"]+)"/g)].map((m) => m[1]));
  for (const r of allRules(checkedIn())) {
    const anchor = r.alert.toLowerCase();
    assert.equal(`${DEFAULT_RUNBOOK_BASE_URL}#${anchor}`, r.annotations.runbook_url, r.alert);
    assert.equal(true, ids.has(anchor), `${r.alert}: no heading for #${anchor} in docs/runbook.md`);
  }
});

test('`trainwatch rules --runbook-base-url` changes every runbook_url to <base>#<anchor> and nothing else; without it, it prints the checked-in file', () => {
  const base = 'https://wiki.example/trainwatch/runbook';
  const rules = (...args: string[]) => spawnSync(process.execPath, [BIN, 'rules', ...args], { encoding: 'utf8' });
  const plain = rules();
  assert.equal(0, plain.status, plain.stderr);
  assert.equal(readFileSync(RULES, 'utf8'), plain.stdout);
  const custom = rules('--runbook-base-url', base);
  assert.equal(0, custom.status, custom.stderr);
  assert.equal(renderAlertRules({ runbookBaseUrl: base }), custom.stdout);
  const mine = allRules(parse(custom.stdout) as RulesDocument);
  const shipped = allRules(checkedIn());
  assert.deepEqual(
    shipped.map((r) => `${base}#${r.alert.toLowerCase()}`),
    mine.map((r) => r.annotations.runbook_url),
  );
  const withoutRunbook = (rs: AlertRule[]) => rs.map((r) => ({ ...r, annotations: { ...r.annotations, runbook_url: '' } }));
  assert.deepEqual(withoutRunbook(shipped), withoutRunbook(mine));
  const t = tmpDir('tw-rules-');
  try {
    const f = join(t.path, 'mine.rules.yml');
    writeFileSync(f, custom.stdout);
    const r = promtool(['check', 'rules', f]);
    assert.equal(0, r.status, r.output);
  } finally {
    t.cleanup();
  }
  for (const bad of ['wiki/runbook', 'https://wiki.example/runbook#x', '']) {
    const r = rules('--runbook-base-url', bad);
    assert.equal(2, r.status, `--runbook-base-url ${JSON.stringify(bad)}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /--runbook-base-url/);
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
