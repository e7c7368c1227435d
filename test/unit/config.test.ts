import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { ConfigError, resolveConfig } from '../../src/config/load.js';
import { SETTINGS, type Setting } from '../../src/config/settings.js';
import { configurationDoc, metricsDoc } from '../../src/gen/docs.js';
import { BIN, REPO, tmpDir } from '../helpers/proc.js';

const flags = (o: Record<string, unknown> = {}) => new Map(Object.entries(o));

test("every documented NSA_WATCH_* variable works with the guide's default", () => {
  const c = resolveConfig(flags(), {});
  assert.deepEqual(
    { interval: 30, halt: false, stall: 180, flatline: 5, loss: 10, grad: 3, fetch: 3.0, gateN: 3, gateEnt: 0.2, gateMax: 0.9 },
    {
      interval: c['watch.interval-s'],
      halt: c.halt,
      stall: c['watch.heartbeat-stall-s'],
      flatline: c['watch.flatline-n'],
      loss: c['watch.loss-flatline-n'],
      grad: c['watch.grad-zero-n'],
      fetch: c['watch.fetch-stall-ratio'],
      gateN: c['watch.gate-collapse-n'],
      gateEnt: c['watch.gate-entropy-min'],
      gateMax: c['watch.gate-max-threshold'],
    },
  );
});

test("the guide's A100 profile, as plain exports, sets exactly those values", () => {
  const c = resolveConfig(flags(), { NSA_WATCH_INTERVAL_S: '15', NSA_WATCH_HEARTBEAT_STALL_S: '120', NSA_WATCH_FLATLINE_N: '3', NSA_WATCH_HALT: '1' });
  assert.deepEqual([15, 120, 3, true], [c['watch.interval-s'], c['watch.heartbeat-stall-s'], c['watch.flatline-n'], c.halt]);
});

test('precedence is flag > env > config file > default', () => {
  const d = tmpDir();
  const file = join(d.path, 'tw.yml');
  writeFileSync(file, 'watch:\n  heartbeat-stall-s: 111\n  flatline-n: 7\nlog.level: warn\nroot: [/a, /b]\n');
  const c = resolveConfig(flags({ config: file, 'watch.heartbeat-stall-s': '333' }), { NSA_WATCH_HEARTBEAT_STALL_S: '222', NSA_WATCH_FLATLINE_N: '8' });
  assert.equal(333, c['watch.heartbeat-stall-s']);
  assert.equal(8, c['watch.flatline-n']);
  assert.equal('warn', c['log.level']);
  assert.deepEqual(['/a', '/b'], c.root);
  assert.equal(30, c['watch.interval-s']);
  d.cleanup();
});

const bad: Array<[string, Record<string, unknown>, Record<string, string>, RegExp]> = [
  ['a stall threshold below its range', { 'watch.heartbeat-stall-s': '0' }, {}, /--watch\.heartbeat-stall-s: .*accepted: a number from 1 to 604800/],
  ['a non-integer count', {}, { NSA_WATCH_FLATLINE_N: '2.5' }, /env NSA_WATCH_FLATLINE_N: .*a whole number from 1 to 100000/],
  ['a halt value other than 0 or 1', { halt: 'maybe' }, {}, /--halt: .*0 or 1/],
  ['an unknown log format', { 'log.format': 'xml' }, {}, /accepted: logfmt, json/],
  ['a listen address without a port', { 'web.listen-address': 'localhost' }, {}, /host:port/],
];
for (const [name, f, env, msg] of bad) {
  test(`${name} is refused with a message naming the setting and the accepted range`, () => {
    assert.throws(
      () => resolveConfig(flags(f), env),
      (e: unknown) => e instanceof ConfigError && msg.test(e.message),
    );
  });
}

test('an unknown key in the config file is refused, naming the key', () => {
  const d = tmpDir();
  const file = join(d.path, 'tw.yml');
  writeFileSync(file, 'watch:\n  heartbeat-stal-s: 5\n');
  assert.throws(() => resolveConfig(flags({ config: file }), {}), /unknown key 'watch\.heartbeat-stal-s'/);
  writeFileSync(file, '{ not: yaml: at all');
  assert.throws(() => resolveConfig(flags({ config: file }), {}), /not valid YAML/);
  d.cleanup();
});

test('--help documents every flag and every env variable of the settings table', () => {
  const r = spawnSync(process.execPath, [BIN, '--help'], { encoding: 'utf8' });
  assert.equal(0, r.status);
  for (const s of SETTINGS) {
    assert.equal(true, r.stdout.includes(`--${s.key}`), `--${s.key} missing from --help`);
    if ('env' in s && s.env) assert.equal(true, r.stdout.includes(s.env), `${s.env} missing from --help`);
  }
});

test('a bad flag exits 2 with a one-line error, no stack trace', () => {
  const r = spawnSync(process.execPath, [BIN, '--dir', '/tmp', '--watch.flatline-n', 'x'], { encoding: 'utf8' });
  assert.equal(2, r.status);
  assert.match(r.stderr, /^trainwatch: error: --watch\.flatline-n: invalid value "x"/);
  assert.equal(false, r.stderr.includes('    at '));
});

test('docs/metrics.md and docs/configuration.md are in sync with the code (npm run gen)', () => {
  assert.equal(metricsDoc(), readFileSync(join(REPO, 'docs/metrics.md'), 'utf8'));
  assert.equal(configurationDoc(), readFileSync(join(REPO, 'docs/configuration.md'), 'utf8'));
});

test("every setting's default is a value of its own type, as the Config type derived from the table says", () => {
  const wrong: string[] = [];
  for (const s of SETTINGS as readonly Setting[]) {
    const d = s.default;
    const ok =
      s.type === 'list'
        ? Array.isArray(d) && d.every((x) => typeof x === 'string')
        : s.type === 'number'
          ? typeof d === 'number'
          : s.type === 'int'
            ? Number.isInteger(d)
            : s.type === 'bool'
              ? typeof d === 'boolean'
              : s.type === 'enum'
                ? typeof d === 'string' && s.choices!.includes(d)
                : d === undefined || typeof d === 'string';
    if (!ok) wrong.push(`${s.key}: ${JSON.stringify(d)} is not a ${s.type}`);
  }
  assert.deepEqual([], wrong);
});
