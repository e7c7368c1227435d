// grafana/trainwatch-dashboard.json: dashboard-linter's rules applied by hand, then every panel
// query run against a real Prometheus scraping a real trainwatch that watches simulated trainers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { METRICS } from '../src/metrics/names.js';
import { REPO, startSimTrainer, startTrainwatch, tmpDir, waitFor, teardown } from './helpers/proc.js';
import { promQuery, startPrometheus } from './helpers/stack.js';

interface Target {
  refId: string;
  expr: string;
  datasource?: { type?: string; uid?: string };
  format?: string;
}
interface Panel {
  id: number;
  type: string;
  title?: string;
  description?: string;
  datasource?: { type?: string; uid?: string };
  gridPos: { h: number; w: number; x: number; y: number };
  fieldConfig?: { defaults?: { unit?: string }; overrides?: Array<{ properties: Array<{ id: string; value: unknown }> }> };
  targets?: Target[];
  panels?: Panel[];
}
interface Variable {
  name: string;
  label?: string;
  type: string;
  query: string | { query: string };
  datasource?: { type?: string; uid?: string };
  refresh?: number;
  includeAll?: boolean;
  allValue?: string;
  multi?: boolean;
}
interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: Variable[] };
}

const DASHBOARD_PATH = join(REPO, 'grafana/trainwatch-dashboard.json');
const RULES_PATH = join(REPO, 'alerts/trainwatch.rules.yml');
const dash = JSON.parse(readFileSync(DASHBOARD_PATH, 'utf8')) as Dashboard;

/** Every panel that shows data: rows are only headings (their nested panels count, collapsed or not). */
const panels: Panel[] = dash.panels.flatMap((p) => (p.type === 'row' ? (p.panels ?? []) : [p]));
const name = (p: Panel) => `panel ${p.id} "${p.title ?? '(untitled)'}"`;
const varQuery = (v: Variable) => (typeof v.query === 'string' ? v.query : v.query.query);
const usesDatasourceVar = (ds: { uid?: string } | undefined) => ds?.uid === '${datasource}' || ds?.uid === '$datasource';

// Grafana's unit ids (packages/grafana-data/src/valueFormats/categories.ts) that fit this domain.
const UNITS = new Set([
  'none',
  'short',
  'percent',
  'percentunit',
  's',
  'ms',
  'µs',
  'ns',
  'm',
  'h',
  'd',
  'dtdurations',
  'bytes',
  'decbytes',
  'bits',
  'Bps',
  'binBps',
  'cps',
  'ops',
  'reqps',
  'rps',
  'wps',
  'cpm',
  'opm',
  'hertz',
  'bool',
  'bool_yes_no',
  'bool_on_off',
  'dateTimeAsIso',
  'dateTimeFromNow',
  'sci',
  'locale',
]);
const ALERT_PANEL = (p: Panel) => (p.targets ?? []).some((t) => /\bALERTS\b/.test(t.expr));

test('the dashboard has a fixed uid and one datasource variable of type datasource that queries prometheus', () => {
  assert.equal('trainwatch', dash.uid);
  const ds = dash.templating.list.filter((v) => v.type === 'datasource');
  assert.equal(1, ds.length);
  assert.equal('datasource', ds[0].name);
  assert.equal('Data source', ds[0].label);
  assert.equal('prometheus', ds[0].query);
  assert.equal(false, readFileSync(DASHBOARD_PATH, 'utf8').includes('DS_PROMETHEUS'), '${DS_PROMETHEUS} only resolves in the UI import flow');
});

test('every panel and every target uses the $datasource variable', () => {
  const bad: string[] = [];
  for (const p of panels) {
    if (!usesDatasourceVar(p.datasource)) bad.push(`${name(p)} uses datasource ${JSON.stringify(p.datasource)}`);
    if (!p.targets?.length) bad.push(`${name(p)} has no targets`);
    for (const t of p.targets ?? [])
      if (!usesDatasourceVar(t.datasource)) bad.push(`${name(p)} target ${t.refId} uses datasource ${JSON.stringify(t.datasource)}`);
  }
  assert.deepEqual([], bad);
});

test('every panel has a title, a description and a Grafana unit', () => {
  const bad: string[] = [];
  for (const p of panels) {
    if (!p.title?.trim()) bad.push(`${name(p)}: no title`);
    if (!p.description?.trim()) bad.push(`${name(p)}: no description`);
    const unit = p.fieldConfig?.defaults?.unit;
    if (!unit || !UNITS.has(unit)) bad.push(`${name(p)}: unit ${JSON.stringify(unit)} is missing or not a Grafana unit id`);
    for (const o of p.fieldConfig?.overrides ?? [])
      for (const prop of o.properties)
        if (prop.id === 'unit' && !UNITS.has(String(prop.value))) bad.push(`${name(p)}: override unit ${JSON.stringify(prop.value)} is not a Grafana unit id`);
  }
  assert.deepEqual([], bad);
});

test('every rate() and irate() uses $__rate_interval, and counters appear only inside rate() or increase()', () => {
  const counters = Object.values(METRICS)
    .filter((m) => m.type === 'counter')
    .map((m) => m.name);
  const bad: string[] = [];
  for (const p of panels)
    for (const t of p.targets ?? []) {
      for (const m of t.expr.matchAll(/\b(i?rate)\s*\(([^()]*(?:\([^()]*\))?[^()]*)\)/g))
        if (!/\[\$__rate_interval\]\s*$/.test(m[2])) bad.push(`${name(p)} target ${t.refId}: ${m[0]} does not use [$__rate_interval]`);
      for (const c of counters)
        for (const m of t.expr.matchAll(new RegExp(`\\b${c}\\b`, 'g')))
          if (!/\b(rate|irate|increase)\s*\(\s*$/.test(t.expr.slice(0, m.index)))
            bad.push(`${name(p)} target ${t.refId}: counter ${c} outside rate()/increase()`);
    }
  assert.deepEqual([], bad);
});

test('template variables run and rank exist, query $datasource with label_values, reload on time range change and allow All as .*', () => {
  for (const n of ['run', 'rank']) {
    const v = dash.templating.list.find((x) => x.name === n);
    assert.ok(v, `variable ${n} is missing`);
    assert.equal('query', v.type);
    assert.equal(true, usesDatasourceVar(v.datasource), `variable ${n} must query $datasource`);
    assert.match(varQuery(v), new RegExp(`^label_values\\(trainwatch_\\w+(\\{[^}]*\\})?,\\s*${n}\\)$`));
    assert.equal(2, v.refresh, `variable ${n} must reload on time range change (refresh: 2)`);
    assert.equal(true, v.includeAll);
    assert.equal(true, v.multi);
    assert.equal('.*', v.allValue, `variable ${n}: All must be .* so series without the label still match`);
  }
  assert.match(varQuery(dash.templating.list.find((x) => x.name === 'rank')!), /run=~"\$run"/, 'rank must follow the chosen runs');
});

test('every trainwatch_* name in a query is in src/metrics/names.ts, and per-run and per-rank series are filtered by $run and $rank', () => {
  const known = new Map<string, readonly string[]>(Object.values(METRICS).map((m) => [m.name, m.labels]));
  const queries: Array<[string, string]> = panels.flatMap((p) => (p.targets ?? []).map((t): [string, string] => [`${name(p)} target ${t.refId}`, t.expr]));
  for (const v of dash.templating.list.filter((x) => x.type === 'query')) queries.push([`variable ${v.name}`, varQuery(v)]);
  const bad: string[] = [];
  for (const [where, expr] of queries)
    for (const m of expr.matchAll(/\b(trainwatch_\w+)(\{[^}]*\})?/g)) {
      const labels = known.get(m[1]);
      if (!labels) {
        bad.push(`${where}: ${m[1]} is not a trainwatch metric`);
        continue;
      }
      if (where === 'variable run') continue; // the run variable lists the runs
      if (labels.includes('run') && !m[2]?.includes('run=~"$run"')) bad.push(`${where}: ${m[0]} lacks run=~"$run"`);
      if (labels.includes('rank') && !where.startsWith('variable') && !m[2]?.includes('rank=~"$rank"')) bad.push(`${where}: ${m[0]} lacks rank=~"$rank"`);
    }
  assert.deepEqual([], bad);
});

test('panel ids are unique and every panel fits the 24-column grid', () => {
  const all = dash.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
  assert.equal(all.length, new Set(all.map((p) => p.id)).size);
  for (const p of all) assert.ok(p.gridPos.x >= 0 && p.gridPos.w > 0 && p.gridPos.x + p.gridPos.w <= 24, `${name(p)} gridPos ${JSON.stringify(p.gridPos)}`);
});

test('the provisioning files are apiVersion 1: a prometheus datasource, and a dashboard provider with a folder and a path', () => {
  const ds = parseYaml(readFileSync(join(REPO, 'grafana/provisioning/datasources/prometheus.yml'), 'utf8'));
  assert.equal(1, ds.apiVersion);
  assert.equal('prometheus', ds.datasources[0].type);
  assert.match(ds.datasources[0].url, /^https?:\/\//);
  assert.match(ds.datasources[0].jsonData.timeInterval, /^\d+[smh]$/, 'timeInterval (the scrape interval) drives $__rate_interval');
  const db = parseYaml(readFileSync(join(REPO, 'grafana/provisioning/dashboards/trainwatch.yml'), 'utf8'));
  assert.equal(1, db.apiVersion);
  const p = db.providers[0];
  assert.equal('file', p.type);
  assert.ok(p.folder, 'provider needs a folder');
  assert.match(p.options.path, /^\/var\/lib\/grafana\/dashboards/);
});

/** A panel query as Grafana would send it, with template variables filled in. */
function expand(expr: string, run: string, rank: string): string {
  return expr
    .replaceAll('$__rate_interval', '10s')
    .replaceAll('$__interval', '5s')
    .replaceAll('$__range', '1m')
    .replace(/\$\{run(?::\w+)?\}|\$run\b/g, run)
    .replace(/\$\{rank(?::\w+)?\}|\$rank\b/g, rank);
}

/** label_values(selector, label) as PromQL that lists the label's values. */
function labelValuesQuery(q: string): { promql: string; label: string } {
  const m = /^label_values\((.+),\s*(\w+)\)$/.exec(q);
  assert.ok(m, `not a label_values query: ${q}`);
  return { promql: `count by (${m[2]}) (${m[1]})`, label: m[2] };
}

test('every panel query is valid PromQL and returns data from a real Prometheus scraping trainwatch (alerts may be empty)', async (t) => {
  const later = teardown(t);
  const d = tmpDir('tw-grafana-');
  later(() => d.cleanup());
  // Two runs: runA healthy on 2 ranks, runB on 3 ranks whose grad_norm turns NaN at step 20.
  const simA = startSimTrainer(['--dir', join(d.path, 'runA'), '--ranks', '2', '--step-s', '0.05', '--beats', '--quiet']);
  later(() => simA.kill());
  const simB = startSimTrainer([
    '--dir',
    join(d.path, 'runB'),
    '--ranks',
    '3',
    '--step-s',
    '0.05',
    '--fault',
    'nonfinite_grad',
    '--fault-at',
    '20',
    '--beats',
    '--quiet',
  ]);
  later(() => simB.kill());
  const tw = await startTrainwatch(['--root', d.path]);
  later(() => tw.stop());

  // Load the alert rules when they exist and are valid; the panels must work either way.
  let ruleFiles = '';
  if (existsSync(RULES_PATH)) {
    const check = spawnSync('promtool', ['check', 'rules', RULES_PATH], { encoding: 'utf8' });
    if (check.status === 0) ruleFiles = `rule_files:\n  - ${JSON.stringify(RULES_PATH)}\n`;
    else t.diagnostic(`not loading ${RULES_PATH}: promtool check rules failed:\n${check.stdout}${check.stderr}`);
  }
  t.diagnostic(ruleFiles ? `loaded ${RULES_PATH}` : 'no alert rules loaded');
  const prom = await startPrometheus(
    `global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n${ruleFiles}scrape_configs:\n  - job_name: trainwatch\n    static_configs:\n      - targets: ['127.0.0.1:${tw.port}']\n`,
  );
  later(() => prom.stop());

  // Enough samples for a 10s rate window, both runs seen, runB diverged, fetch baselines warmed up.
  await waitFor(
    async () => {
      const ready = await Promise.all([
        promQuery(prom.url, 'min(count_over_time(trainwatch_lines_read_total[10s])) >= 4'),
        promQuery(prom.url, 'count(trainwatch_run_ranks) == 2'),
        promQuery(prom.url, 'trainwatch_nonfinite_count{run="runB"} > 0'),
        promQuery(prom.url, 'count(trainwatch_data_fetch_baseline_ratio) == 2'), // rank 0 of each run: only it logs dt_fetch_s
      ]);
      return ready.every((r) => r.length > 0);
    },
    'Prometheus to hold a few scrapes of both runs',
    40_000,
    250,
  ).catch((e: Error) => {
    throw new Error(`${e.message}\n--- trainwatch ---\n${tw.logs().slice(-3000)}\n--- prometheus ---\n${prom.logs().slice(-3000)}`);
  });

  const failures: string[] = [];
  for (const [run, rank] of [
    ['.*', '.*'],
    ['runB', '0'],
  ] as const) {
    for (const p of panels)
      for (const tg of p.targets ?? []) {
        const expr = expand(tg.expr, run, rank);
        try {
          const res = await promQuery(prom.url, expr);
          if (res.length === 0 && !ALERT_PANEL(p)) failures.push(`${name(p)} target ${tg.refId} ($run=${run}, $rank=${rank}): no data for ${expr}`);
          const strays = res.filter((s) => s.metric.run !== undefined && !new RegExp(`^(?:${run})$`).test(s.metric.run));
          if (strays.length) failures.push(`${name(p)} target ${tg.refId}: $run=${run} still returned run ${strays[0].metric.run}`);
        } catch (e) {
          failures.push(`${name(p)} target ${tg.refId}: ${(e as Error).message}`);
        }
      }
  }
  assert.deepEqual([], failures);

  // The variables list what is there.
  const values = async (v: string, run: string) => {
    const q = labelValuesQuery(expand(varQuery(dash.templating.list.find((x) => x.name === v)!), run, '.*'));
    return (await promQuery(prom.url, q.promql)).map((s) => s.metric[q.label]).sort();
  };
  assert.deepEqual(['runA', 'runB'], await values('run', '.*'));
  assert.deepEqual(['0', '1', '2'], await values('rank', 'runB'));
  assert.deepEqual(['0', '1'], await values('rank', 'runA'));

  // NaN stays visible: the non-finite stat is red for runB only, and the table prints NaN.
  const byTitle = (title: string) => panels.find((p) => p.title === title)!;
  const q = async (title: string, refId = 'A') => promQuery(prom.url, expand(byTitle(title).targets!.find((x) => x.refId === refId)!.expr, '.*', '.*'));
  const nonfinite = new Map((await q('Non-finite loss or gradient norm')).map((s) => [s.metric.run, Number(s.value[1])]));
  assert.equal(0, nonfinite.get('runA'));
  assert.ok(nonfinite.get('runB')! > 0, `runB non-finite streak is ${nonfinite.get('runB')}`);
  // Only rank 0 logs metrics; the trainer aborts on a NaN loss, so the NaN shows in grad_norm.
  const gradB = (await q('Latest loss and gradient norm', 'B')).filter((s) => s.metric.run === 'runB').map((s) => s.value[1]);
  assert.deepEqual(['NaN'], gradB);
  // Per-run throughput is the mean of the ranks' global figure, not a sum over ranks.
  for (const s of await q('Tokens per second per run')) assert.ok(Math.abs(Number(s.value[1]) - 12000) < 100, `${s.metric.run}: ${s.value[1]} tokens/s`);
  // Heartbeat ages of live ranks are small and below their thresholds.
  for (const s of await q('Heartbeat age vs stall threshold')) assert.ok(Number(s.value[1]) < 10, `${s.metric.run}/${s.metric.rank}: age ${s.value[1]}`);
});
