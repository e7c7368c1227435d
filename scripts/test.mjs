#!/usr/bin/env node
// `npm test`: installs the Debian tools the tests need (when missing), builds, runs every test.
// `npm test -- <substring>` runs only the test files whose path contains it.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const NEEDED = [
  ['promtool', 'prometheus'],
  ['prometheus', 'prometheus'],
  ['prometheus-alertmanager', 'prometheus-alertmanager'],
  ['amtool', 'prometheus-alertmanager'],
  ['chromium', 'chromium'],
  ['mtail', 'mtail'],
  ['python3', 'python3'],
  ['tini', 'tini'],
  ['openssl', 'openssl'],
];
const say = (s) => process.stdout.write(`[npm test] ${s}\n`);
const has = (bin) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;

const missing = [...new Set(NEEDED.filter(([bin]) => !has(bin)).map(([, pkg]) => pkg))];
if (missing.length > 0) {
  const fix = `apt-get update && apt-get install -y --no-install-recommends ${missing.join(' ')}`;
  if (process.getuid?.() !== 0 || !has('apt-get')) {
    say(`missing Debian packages: ${missing.join(', ')}. Fix: sudo sh -c '${fix}'`);
    process.exit(1);
  }
  say(`installing ${missing.join(', ')} (a minute or two on a fresh machine)…`);
  const r = spawnSync('sh', ['-c', fix], { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (r.status !== 0) {
    say(`installing failed. Fix: run '${fix}' by hand and read its error`);
    process.exit(1);
  }
}
if (!existsSync('node_modules/.bin/tsc')) {
  say('node_modules is missing. Fix: run `npm ci` first');
  process.exit(1);
}
say('building (tsc)…');
const build = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);

// Lint and format are part of the test, so CI runs them; a filtered run (`npm test -- x`) skips them.
if (!process.argv[2]) {
  say('lint (eslint, type-aware) and format (prettier --check)…');
  for (const [what, args, fix] of [
    ['eslint', ['node_modules/eslint/bin/eslint.js', '.'], 'fix what it names (npx eslint . --fix fixes some)'],
    ['prettier', ['node_modules/prettier/bin/prettier.cjs', '--check', '--log-level', 'warn', '.'], 'run npm run format'],
  ]) {
    const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
    if (r.status !== 0) {
      say(`${what} failed. Fix: ${fix}`);
      process.exit(r.status ?? 1);
    }
  }
}

const files = [];
const walk = (d) => {
  for (const n of readdirSync(d).sort()) {
    const p = join(d, n);
    if (statSync(p).isDirectory()) walk(p);
    else if (n.endsWith('.test.js')) files.push(p);
  }
};
walk('dist/test');
const filter = process.argv[2];
const chosen = filter ? files.filter((f) => f.includes(filter)) : files;
if (chosen.length === 0) {
  say(`no test file matches '${filter}'`);
  process.exit(1);
}
say(`running ${chosen.length} test files…`);
const r = spawnSync(process.execPath, ['--test', '--test-reporter=spec', '--test-concurrency=2', ...chosen], { stdio: 'inherit' });
process.exit(r.status ?? 1);
