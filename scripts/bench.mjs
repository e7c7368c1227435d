#!/usr/bin/env node
// `npm run bench`: builds (tsc), runs every benchmark in bench/ one after the other, and prints
// a markdown table of their result rows. `npm run bench -- <substring>` runs only the matching
// benchmarks. These are measurements, not tests: a missed target does not fail the command
// (exit 0); only a benchmark that could not run at all (verdict ERROR) gives exit 1.
// Each benchmark prints human text and, as its last stdout line, one JSON row
// {name, figure, target, verdict, data}; see bench/lib.ts.
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';

// In a fixed order: quick in-process ones first, the 30 s CPU run near the end.
const BENCHES = ['ingest', 'mtail', 'first-scrape', 'scrape-10k', 'cpu-64', 'detection', 'webhook-load', 'eventloop'];
const TIMEOUT_S = 180;
// A private snapshot build: a concurrent `tsc` into dist/ (tests, an editor) cannot change the
// code under measurement halfway through. Laid out like the package (bin/, dist/,
// package.json) so bin/trainwatch.js and the test helpers' REPO resolve inside it;
// node_modules resolves upwards to the repository's.
const SNAP = '.tmp/bench-build';

const say = (s) => process.stdout.write(`[bench] ${s}\n`);

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

const filter = process.argv[2];
const chosen = filter ? BENCHES.filter((b) => b.includes(filter)) : BENCHES;
if (chosen.length === 0) {
  say(`no benchmark matches '${filter}' (have: ${BENCHES.join(', ')})`);
  process.exit(1);
}

const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, node ${process.version}, ${new Date().toISOString()}, ${revision}`;
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
    const timer = setTimeout(() => {
      say(`${name}: still running after ${TIMEOUT_S} s; killing it`);
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, TIMEOUT_S * 1000);
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

const rows = [];
const start = Date.now();
for (const [i, name] of chosen.entries()) {
  say(`(${i + 1}/${chosen.length}) ${name}…`);
  rows.push(await runOne(name));
}

const cell = (s) => String(s).replace(/\|/g, '\\|');
const table = [
  '| benchmark | figure | target | verdict |',
  '|---|---|---|---|',
  ...rows.map((r) => `| ${cell(r.name)} | ${cell(r.figure)} | ${cell(r.target)} | ${r.verdict === 'met' ? 'met' : `**${r.verdict}**`} |`),
].join('\n');
process.stdout.write(`\n${machine}; total ${((Date.now() - start) / 1000).toFixed(0)} s\n\n${table}\n`);
rmSync(SNAP, { recursive: true, force: true });
process.exit(rows.some((r) => r.verdict === 'ERROR') ? 1 : 0);
