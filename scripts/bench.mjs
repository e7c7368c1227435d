#!/usr/bin/env node
// `npm run bench`: builds (tsc), runs every benchmark in bench/ one after the other, and prints
// a markdown table of their result rows. `npm run bench -- <substring>` runs only the matching
// benchmarks. These are measurements, not tests: a missed target does not fail the command
// (exit 0); only a benchmark that could not run at all (verdict ERROR) gives exit 1.
// Each benchmark prints human text and, as its last stdout line, one JSON row
// {name, figure, target, verdict, data}; see bench/lib.ts.
// Regressions: each run is compared with the recorded run in bench/recorded.json (the one
// docs/benchmarks.md's table comes from) on a few key figures per benchmark, and changes
// beyond the run-to-run noise are marked. `npm run bench -- --record` replaces the record.
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';

// In a fixed order: quick in-process ones first, the 30 s CPU run near the end.
const BENCHES = [
  'ingest',
  'step-lags',
  'mtail',
  'first-scrape',
  'scrape-10k',
  'cpu-64',
  'detection',
  'webhook-load',
  'eventloop',
  'healthz-attack',
  'hostile-halt',
  'root-200k',
];
const TIMEOUT_S = 180;
/** Longer bounds: 200,000 files are written, read and removed. */
const TIMEOUTS_S = { 'root-200k': 360 };
// A private snapshot build: a concurrent `tsc` into dist/ (tests, an editor) cannot change the
// code under measurement halfway through. Laid out like the package (bin/, dist/,
// package.json) so bin/trainwatch.js and the test helpers' REPO resolve inside it;
// node_modules resolves upwards to the repository's.
const SNAP = '.tmp/bench-build';

const say = (s) => process.stdout.write(`[bench] ${s}\n`);

const args = process.argv.slice(2);
const record = args.includes('--record');
const filter = args.find((a) => !a.startsWith('--'));
const unknown = args.filter((a) => a.startsWith('--') && a !== '--record');
if (unknown.length) {
  say(`unknown option ${unknown[0]}. Usage: npm run bench [-- [<name substring>] [--record]]`);
  process.exit(2);
}

const chosen = filter ? BENCHES.filter((b) => b.includes(filter)) : BENCHES;
if (chosen.length === 0) {
  say(`no benchmark matches '${filter}' (have: ${BENCHES.join(', ')})`);
  process.exit(1);
}

if (!existsSync('node_modules/typescript/bin/tsc')) {
  say('node_modules is missing. Fix: run `npm ci` first');
  process.exit(1);
}
say(`building (tsc) into ${SNAP}…`);
rmSync(SNAP, { recursive: true, force: true });
mkdirSync(SNAP, { recursive: true });
const build = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json', '--outDir', join(SNAP, 'dist')], { stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);
for (const p of ['bin', 'package.json', 'bench/mtail', 'bench/appender.py']) cpSync(p, join(SNAP, p), { recursive: true });
const git = (args) => spawnSync('git', args, { encoding: 'utf8' }).stdout.trim();
const dirty = git(['status', '--porcelain', '--', 'src']).split('\n').filter(Boolean).length;
const revision = `commit ${git(['rev-parse', '--short', 'HEAD'])}${dirty ? ` + ${dirty} uncommitted file(s) in src/` : ''}`;

const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, node ${process.version}, ${new Date().toISOString()}, load ${loadavg()[0].toFixed(1)}, ${revision}`;
say(machine);

/** Runs one benchmark with a time bound; its whole process group is killed on timeout. */
function runOne(name) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    // --expose-gc: the ingest benchmarks collect garbage between passes.
    const child = spawn(process.execPath, ['--expose-gc', join(SNAP, 'dist/bench', `${name}.js`)], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = '';
    let partial = '';
    const relay = (d, stream) => {
      const text = partial + d.toString();
      const lines = text.split('\n');
      partial = lines.pop();
      for (const l of lines) {
        if (stream === 'out') out += l + '\n';
        // the JSON row is for the table; everything else is progress
        if (!(stream === 'out' && l.startsWith('{"name"'))) process.stdout.write(`  [${name}] ${l}\n`);
      }
    };
    child.stdout.on('data', (d) => relay(d, 'out'));
    child.stderr.on('data', (d) => relay(d, 'err'));
    const limitS = TIMEOUTS_S[name] ?? TIMEOUT_S;
    const timer = setTimeout(() => {
      say(`${name}: still running after ${limitS} s; killing it`);
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, limitS * 1000);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (partial) out += partial;
      const last = out.trim().split('\n').pop() ?? '';
      let row;
      try {
        row = JSON.parse(last);
      } catch {
        row = { name, figure: `no result (exit ${code})`, target: '', verdict: 'ERROR', data: {} };
      }
      say(`${name}: ${row.verdict} in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
      resolve(row);
    });
  });
}

const RECORD = 'bench/recorded.json';
/** Worse by more than this fraction is marked; the benchmarks vary by ±30 % on a shared 2-core VM. */
const NOISE = 0.3;
/** The key figures compared with the record: [label, value from the row's data, unit, better]. */
const KEYS = {
  ingest: [['pipeline/raw', (d) => d.ratio * 100, '%', 'higher']],
  mtail: [['× mtail', (d) => d.ratio, '×', 'higher']],
  'first-scrape': [['work', (d) => d.workS * 1000, 'ms', 'lower']],
  'scrape-10k': [
    ['p99', (d) => d.p99Ms, 'ms', 'lower'],
    ['RSS', (d) => d.rssBytes / 1e6, 'MB', 'lower'],
  ],
  'cpu-64': [['CPU', (d) => d.cpuFraction * 100, '%', 'lower']],
  detection: [
    ['stall worst', (d) => d.worstStallS * 1000, 'ms', 'lower'],
    ['flatline worst', (d) => d.worstFlatlineS * 1000, 'ms', 'lower'],
  ],
  'webhook-load': [
    ['alerts/s', (d) => d.closedLoop.alertsPerS, '/s', 'higher'],
    ['p99', (d) => d.closedLoop.p99Ms, 'ms', 'lower'],
  ],
  eventloop: [['max block', (d) => Math.max(...d.phases.slice(1).map((p) => p.maxMs)), 'ms', 'lower']],
  'step-lags': [
    ['4,096 healthy', (d) => d.healthy4096_ms, 'ms', 'lower'],
    ['4,096 spread', (d) => d.spread4096_ms, 'ms', 'lower'],
  ],
  'healthz-attack': [['worst p99', (d) => d.worstP99Ms, 'ms', 'lower']],
  'hostile-halt': [['worst', (d) => d.worstMs, 'ms', 'lower']],
  'root-200k': [
    ['CPU', (d) => d.cpuFraction * 100, '%', 'lower'],
    ['RSS', (d) => d.rssBytes / 1e6, 'MB', 'lower'],
    ['first pass', (d) => d.firstPassS, 's', 'lower'],
  ],
};

function readRecord() {
  if (!existsSync(RECORD)) return undefined;
  try {
    return JSON.parse(readFileSync(RECORD, 'utf8'));
  } catch (e) {
    say(`${RECORD} is not valid JSON (${e.message}); comparing with nothing. Fix: restore it from git or re-record with --record`);
    return undefined;
  }
}

/** "p99 178 → 95 ms (−47 %)" per key figure; REGRESSED when worse beyond the noise. */
function compare(bench, row, old) {
  if (row.verdict === 'ERROR') return '–';
  if (!old || old.verdict === 'ERROR') return 'no record';
  const out = [];
  for (const [label, get, unit, better] of KEYS[bench] ?? []) {
    let a, b;
    try {
      [a, b] = [get(old.data), get(row.data)];
    } catch {
      continue; // a figure the recorded run did not have
    }
    if (!Number.isFinite(a) || !Number.isFinite(b) || a === 0) continue;
    const rel = (b - a) / Math.abs(a);
    const worse = better === 'higher' ? -rel : rel;
    const n = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(2));
    out.push(`${label} ${n(a)} → ${n(b)} ${unit} (${rel >= 0 ? '+' : '−'}${Math.abs(rel * 100).toFixed(0)} %)${worse > NOISE ? ' **REGRESSED**' : ''}`);
  }
  return out.length ? out.join('; ') : 'not comparable';
}

const rows = [];
const start = Date.now();
for (const [i, name] of chosen.entries()) {
  say(`(${i + 1}/${chosen.length}) ${name}…`);
  rows.push(await runOne(name));
}

const cell = (s) => String(s).replace(/\|/g, '\\|');
const recorded = readRecord();
const changes = rows.map((r, i) => compare(chosen[i], r, recorded?.rows[chosen[i]]));
const table = [
  '| benchmark | figure | target | verdict | vs recorded |',
  '|---|---|---|---|---|',
  ...rows.map(
    (r, i) => `| ${cell(r.name)} | ${cell(r.figure)} | ${cell(r.target)} | ${r.verdict === 'met' ? 'met' : `**${r.verdict}**`} | ${cell(changes[i])} |`,
  ),
].join('\n');
process.stdout.write(`\n${machine}; total ${((Date.now() - start) / 1000).toFixed(0)} s\n\n${table}\n`);
if (recorded)
  process.stdout.write(
    `\nvs recorded: ${RECORD} (${recorded.machine}); a change is marked REGRESSED when it is worse by more than the run-to-run noise (${NOISE * 100} %): re-run that benchmark before believing it.\n`,
  );
if (record) {
  // A partial run (a name filter) keeps the record's machine line; each row recorded carries its own.
  const next = { machine: filter && recorded ? recorded.machine : machine, rows: { ...(recorded?.rows ?? {}) } };
  for (const [i, r] of rows.entries()) if (r.verdict !== 'ERROR') next.rows[chosen[i]] = { ...r, machine };
  writeFileSync(RECORD, JSON.stringify(next, null, 1) + '\n');
  say(`recorded ${rows.length} result(s) in ${RECORD}`);
}
rmSync(SNAP, { recursive: true, force: true });
process.exit(rows.some((r) => r.verdict === 'ERROR') ? 1 : 0);
