// Threshold profiles (config/profiles.ts): globs, which profile a run gets, and the config
// file's `profiles:` section with its errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Profiles, globToRegExp } from '../../src/config/profiles.js';
import { ConfigError, resolveConfig } from '../../src/config/load.js';
import { REPO, tmpDir } from '../helpers/proc.js';

/** A config from a YAML config file's text plus flags. */
function configFrom(yaml: string, flags: Record<string, unknown> = {}) {
  const d = tmpDir('tw-prof-');
  try {
    const path = join(d.path, 'tw.yml');
    writeFileSync(path, yaml);
    return resolveConfig(new Map(Object.entries({ config: path, ...flags })), {});
  } finally {
    d.cleanup();
  }
}

test('a glob: * stays within a path segment, ** crosses segments, ? is one character, and the rest is literal', () => {
  const cases: Array<[string, string, boolean]> = [
    ['prod-*', 'prod-a', true],
    ['prod-*', 'prod-a/b', false],
    ['team/**', 'team/x/y', true],
    ['run-?', 'run-1', true],
    ['run-?', 'run-12', false],
    ['a.b', 'axb', false],
    ['a.b', 'a.b', true],
    ['(x)+', '(x)+', true],
  ];
  assert.deepEqual(
    cases.map(([, , want]) => want),
    cases.map(([g, name]) => globToRegExp(g).test(name)),
  );
});

test("a run gets the first matching glob's profile, the default when none matches, and the profile sets only what it names", () => {
  const c = configFrom('halt: false\nwatch:\n  loss-flatline-n: 7\n', { 'run.profile': ['prod-*=a100-production', 'p*=rtx4090-dev'] });
  const p = new Profiles(c);
  const prod = p.forRun('prod-7');
  const other = p.forRun('pz');
  const none = p.forRun('zzz');
  assert.deepEqual(
    [
      ['a100-production', 'glob', 120, 3, 7, true],
      ['rtx4090-dev', 'glob', 300, 8, 7, false],
      ['default', 'default', 180, 5, 7, false],
    ],
    [prod, other, none].map((r) => [r.name, r.via, r.thresholds.stallS, r.thresholds.flatlineN, r.thresholds.lossFlatlineN, r.halt]),
  );
  assert.equal(prod, p.forRun('prod-8'), 'runs on one profile share one threshold set');
});

test("the config file's profiles: keys, keys without watch., NSA_WATCH_* names and a nested watch map all work, and override a shipped profile", () => {
  const c = configFrom(
    [
      'run:',
      '  profile: ["q-*=quick", "a-*=a100-production"]',
      'profiles:',
      '  quick:',
      '    NSA_WATCH_HEARTBEAT_STALL_S: 60',
      '    flatline-n: 2',
      '    watch.grad-zero-n: 0',
      '    watch:',
      '      straggler-steps: 9',
      '  a100-production:',
      '    NSA_WATCH_FLATLINE_N: 4',
    ].join('\n'),
  );
  const p = new Profiles(c);
  const q = p.forRun('q-1').thresholds;
  assert.deepEqual([60, 2, 0, 9], [q.stallS, q.flatlineN, q.gradZeroN, q.stragglerSteps]);
  assert.deepEqual([180, 4], [p.forRun('a-1').thresholds.stallS, p.forRun('a-1').thresholds.flatlineN], 'the config replaces the shipped profile');
});

test('bad profiles stop trainwatch with a message naming the profile, the key and the fix', () => {
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['profiles:\n  p:\n    notify.exec: /bin/true\n', {}, /profile 'p': 'notify.exec' cannot be set per run\. Allowed: watch\.heartbeat-stall-s/],
    ['profiles:\n  p:\n    flatline-n: 0\n', {}, /profile 'p': key 'flatline-n'.*accepted: a whole number from 1/],
    ['profiles:\n  p:\n    flatline-n: 2\n    NSA_WATCH_FLATLINE_N: 3\n', {}, /profile 'p' sets watch\.flatline-n twice/],
    ['profiles:\n  default:\n    flatline-n: 2\n', {}, /profile name 'default' is not allowed/],
    ['profiles:\n  "a b":\n    flatline-n: 2\n', {}, /profile name 'a b' is not allowed/],
    ['profiles:\n  p: 3\n', {}, /profile 'p' must be a mapping/],
    ['profiles: [1]\n', {}, /'profiles' must map profile names to settings/],
    ['{}\n', { 'run.profile': ['x*=nope'] }, /names profile 'nope', which is not defined\. Known: a100-production, rtx4090-dev, multi-node/],
    ['{}\n', { 'run.profile': ['x*'] }, /"x\*" is not GLOB=PROFILE; for example 'dev-\*=rtx4090-dev'/],
  ];
  for (const [yaml, flags, want] of cases)
    assert.throws(
      () => configFrom(yaml, flags),
      (e: Error) => e instanceof ConfigError && want.test(e.message),
      yaml,
    );
});

test('the config example in docs/configuration.md, "Per-run thresholds", loads and does what it says', () => {
  const doc = readFileSync(join(REPO, 'docs/configuration.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Per-run thresholds'));
  const yaml = /```yaml\n([^]*?)```/.exec(section)![1];
  const p = new Profiles(configFrom(yaml));
  assert.deepEqual(
    ['a100-production', 'rtx4090-dev', 'quick', 'default'],
    ['prod-1', 'dev/team/x', 'sweep-3', 'other'].map((n) => p.forRun(n).name),
  );
  assert.deepEqual([60, 2], [p.forRun('sweep-3').thresholds.stallS, p.forRun('sweep-3').thresholds.flatlineN]);
});
