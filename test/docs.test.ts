// The docs are checked against the repository they describe: links and paths resolve, the
// README's settings table and every env variable named in the docs agree with the one settings
// table (src/config/settings.ts), the README's Debian packages are the ones npm test installs,
// the optional-fields table is the parser's, and the SIGUSR1 warning and snippet hold for a real
// Python process.
import { noticeEnv } from '../src/notify/notify.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { SETTINGS, type Setting } from '../src/config/settings.js';
import { slug } from '../src/http/docs.js';
import { toRecord } from '../src/parse/line.js';
import { REPO, requireBinary, waitFor } from './helpers/proc.js';

const DOCS = [
  'README.md',
  ...readdirSync(join(REPO, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];
const text = (f: string) => readFileSync(join(REPO, f), 'utf8');
/** The text outside fenced code blocks. */
const prose = (s: string) => s.replace(/^```[\s\S]*?^```/gm, '');

const anchors = (f: string) =>
  new Set(
    text(f)
      .replace(/^```[\s\S]*?^```/gm, '')
      .split('\n')
      .filter((l) => /^#{1,6} /.test(l))
      .map((l) => slug(l.replace(/^#+ /, ''))),
  );

test('every relative link in README.md and docs/ points at a file that exists, and at a heading that exists', () => {
  const broken: string[] = [];
  for (const f of DOCS) {
    for (const m of prose(text(f)).matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1];
      if (/^[a-z]+:/.test(target)) continue; // http:, https:, mailto:
      const [path, anchor] = target.split('#') as [string, string | undefined];
      const file = path === '' ? f : relative(REPO, join(REPO, dirname(f), path));
      if (!existsSync(join(REPO, file))) broken.push(`${f}: ${target} (no ${file})`);
      else if (anchor && file.endsWith('.md') && !anchors(file).has(anchor)) broken.push(`${f}: ${target} (no heading #${anchor} in ${file})`);
    }
  }
  assert.deepEqual([], broken);
});

test('every repository path README.md names in backquotes exists', () => {
  const missing: string[] = [];
  // The original watchdog's path, in the trainer's repository, not this one.
  const elsewhere = new Set(['scripts/_watchdog.py']);
  for (const m of text('README.md').matchAll(/`((?:src|docs|deploy|alerts|grafana|scripts|bench|test|bin)\/[\w./-]*)`/g)) {
    if (!existsSync(join(REPO, m[1])) && !elsewhere.has(m[1])) missing.push(m[1]);
  }
  // The tree under "Developing" names src/ folders and files bare.
  const tree = /## Developing\n+```\n([\s\S]*?)```/.exec(text('README.md'))![1];
  for (const m of tree.matchAll(/^ {2}(\w[\w-]*\/)/gm)) if (!existsSync(join(REPO, 'src', m[1]))) missing.push(`src/${m[1]}`);
  for (const m of tree.matchAll(/\b([\w-]+\.ts)\b/g)) {
    const found = readdirSync(join(REPO, 'src'), { recursive: true }).some((p) => String(p).endsWith(m[1]));
    if (!found) missing.push(m[1]);
  }
  assert.deepEqual([], missing);
});

test('the README settings table gives each flag the env variable and default of the settings table', () => {
  const byFlag = new Map((SETTINGS as readonly Setting[]).map((s) => [`--${s.key}`, s]));
  const rows = text('README.md')
    .split('\n')
    .filter((l) => /^\| `--/.test(l));
  assert.notEqual(0, rows.length, 'README.md has no settings table');
  const wrong: string[] = [];
  for (const row of rows) {
    const [flagCell, envCell, defCell] = row
      .split(/(?<!\\)\|/)
      .slice(1)
      .map((c) => c.trim());
    const flags = [...flagCell.matchAll(/`(--[\w.-]+)/g)].map((m) => m[1]);
    for (const flag of flags) {
      const s = byFlag.get(flag);
      if (!s) {
        wrong.push(`${flag}: no such setting`);
        continue;
      }
      const env = envCell === '–' ? undefined : envCell.replace(/`/g, '');
      if (env !== s.env) wrong.push(`${flag}: README says env ${env ?? '–'}, the table ${s.env ?? '–'}`);
      const def = defCell.replace(/`/g, '');
      const want =
        s.default === undefined || (Array.isArray(s.default) && s.default.length === 0) ? '–' : s.type === 'bool' ? (s.default ? '1' : '0') : String(s.default);
      if (def !== want) wrong.push(`${flag}: README says default ${def}, the table ${want}`);
    }
  }
  assert.deepEqual([], wrong);
});

test('every NSA_WATCH_* and TRAINWATCH_* variable the docs name is a setting, or one of the few documented elsewhere', () => {
  const envs = new Set((SETTINGS as readonly Setting[]).flatMap((s) => (s.env ? [s.env] : [])));
  // Not settings of trainwatch itself: Compose's (deploy/compose/compose.yaml) and the PrometheusRule generator's,
  // and the environment a --notify.exec command gets (taken from the code that sets it).
  const sample = noticeEnv({
    event: 'opened',
    run: '',
    dir: '',
    kind: '',
    rank: 0,
    message: '',
    severity: '',
    halted: false,
    state: '',
    episode: '',
    ts: 0,
    host: '',
  });
  const others = new Set([
    'TRAINWATCH_RUNS_DIR',
    'TRAINWATCH_UID',
    'TRAINWATCH_GID',
    'TRAINWATCH_PROMETHEUSRULE_LABELS',
    'TRAINWATCH_FUZZ_SEED',
    ...Object.keys(sample),
  ]);
  const unknown: string[] = [];
  for (const f of DOCS)
    for (const m of text(f).matchAll(/\b((?:NSA_WATCH|TRAINWATCH)_[A-Z0-9_]+)/g)) if (!envs.has(m[1]) && !others.has(m[1])) unknown.push(`${f}: ${m[1]}`);
  assert.deepEqual([], unknown);
});

test('the README names every Debian package that `npm test` installs (scripts/test.mjs)', () => {
  const script = text('scripts/test.mjs');
  const needed = /const NEEDED = \[([\s\S]*?)\n\];/.exec(script);
  assert.ok(needed, 'scripts/test.mjs: the NEEDED list is gone');
  const packages = [...new Set([...needed[1].matchAll(/\['[\w-]+', '([\w-]+)'\]/g)].map((m) => m[1]))];
  assert.notEqual(0, packages.length);
  const sentence = /`npm test` installs the Debian packages[^(]*\(([^)]*)\)/.exec(text('README.md'));
  assert.ok(sentence, 'README.md: the sentence "`npm test` installs the Debian packages … (…)" is gone');
  const named = [...sentence[1].matchAll(/`([\w-]+)`/g)].map((m) => m[1]).sort();
  assert.deepEqual(packages.sort(), named);
});

test('docs/detection.md "Required and optional fields": the table lists exactly the optional fields the parser reads, and the required ones are required', () => {
  const parsed = toRecord({ ts: 1, rank: 0, step: 1 });
  assert.equal(true, parsed.ok);
  const required = ['ts', 'rank', 'step'];
  const optional = Object.keys(parsed.ok ? parsed.record : {})
    .filter((k) => !required.includes(k) && k !== 'msg')
    .sort();
  const section = /### Required and optional fields\n([\s\S]*?)\n#/.exec(text('docs/detection.md'));
  assert.ok(section, 'docs/detection.md: the section "Required and optional fields" is gone');
  const rows = section[1].split('\n').filter((l) => /^\| `/.test(l));
  const documented = rows.flatMap((r) => [...r.split('|')[1].matchAll(/`(\w+)`/g)].map((m) => m[1])).sort();
  assert.deepEqual(optional, documented);
  assert.match(section[1], /A record needs `ts`, `rank` and `step`/);
  for (const k of required) {
    const rec: Record<string, number> = { ts: 1, rank: 0, step: 1 };
    delete rec[k];
    assert.deepEqual({ ok: false, reason: 'missing_field' }, toRecord(rec), `a record without ${k}`);
  }
});

test(
  'docs/detection.md on SIGUSR1: a Python process without a handler is killed by it, and with the two lines shown it dumps stacks and runs on',
  { timeout: 60_000 },
  async () => {
    requireBinary('python3', 'python3');
    const snippet = /```python\n(import faulthandler[\s\S]*?)```/.exec(text('docs/detection.md'));
    assert.ok(snippet, 'docs/detection.md: the faulthandler snippet is gone');
    const start = (code: string) => {
      const p = spawn('python3', ['-c', `${code}\nimport time\nprint("ready", flush=True)\nwhile True: time.sleep(0.05)\n`], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      p.stdout.on('data', (d) => (out += d));
      p.stderr.on('data', (d) => (out += d));
      const exited = new Promise<NodeJS.Signals | null>((r) => p.on('exit', (_c, sig) => r(sig)));
      return { p, out: () => out, exited };
    };
    const bare = start('');
    await waitFor(() => bare.out().includes('ready'), 'python3 to start');
    bare.p.kill('SIGUSR1');
    assert.equal('SIGUSR1', await bare.exited, 'without a handler SIGUSR1 terminates the process');

    const handled = start(snippet[1]);
    try {
      await waitFor(() => handled.out().includes('ready'), 'python3 with the snippet to start');
      handled.p.kill('SIGUSR1');
      await waitFor(() => /File "<string>", line \d+ in <module>/.test(handled.out()), 'the stack dump on stderr');
      assert.equal(null, handled.p.exitCode, 'the process runs on after the dump');
      handled.p.kill('SIGTERM');
      assert.equal('SIGTERM', await handled.exited, 'it was still alive to receive the next signal');
    } finally {
      handled.p.kill('SIGKILL');
    }
  },
);
