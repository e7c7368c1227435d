// The actions module in-process: episodes, re-arming, retries, confinement, restart memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, realpathSync, renameSync, rmSync, rmdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Actions, type RunRef } from '../../src/actions/actions.js';
import type { Anomaly } from '../../src/detect/detect.js';
import { makeLogger } from '../../src/log.js';
import { Stats } from '../../src/watch/stats.js';
import { tmpDir } from '../helpers/proc.js';

const quiet = makeLogger('error', 'json', { write: () => true } as unknown as NodeJS.WritableStream);
const stall: Anomaly = { kind: 'heartbeat_stall', rank: 0, value: 200, threshold: 180, message: 'no heartbeat' };
const flat: Anomaly = { kind: 'throughput_flatline', rank: 1, value: 5, threshold: 5, message: 'flat' };

function setup(halt = true) {
  const d = tmpDir('tw-act-');
  const dir = join(d.path, 'run');
  mkdirSync(dir);
  const run: RunRef = { name: 'run', dir, real: realpathSync(dir) };
  const stats = new Stats();
  const mk = () => new Actions({ halt, by: 'test', escalateS: 0, escalateTermS: 0, log: quiet, stats });
  const audit = () => (existsSync(join(dir, '.trainwatch-audit.jsonl')) ? readFileSync(join(dir, '.trainwatch-audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>) : []);
  const read = (f: string) => (existsSync(join(dir, f)) ? readFileSync(join(dir, f), 'utf8') : undefined);
  return { d, dir, run, stats, actions: mk(), mk, audit, read };
}

test('an episode writes once; a deleted .anomaly_type stays deleted while it lasts; after recovery the next episode writes again', async () => {
  const { d, run, actions, audit, read, dir } = setup();
  await actions.reconcile(run, [stall], 1000, false);
  assert.equal('heartbeat_stall\n', read('.anomaly_type'));
  assert.equal('halt: heartbeat_stall\n', read('.HALT'));
  rmSync(join(dir, '.anomaly_type'));
  await actions.reconcile(run, [stall], 1010, false);
  assert.equal(undefined, read('.anomaly_type'));
  await actions.reconcile(run, [], 1020, false);
  await actions.reconcile(run, [stall], 1030, false);
  assert.equal('heartbeat_stall\n', read('.anomaly_type'));
  assert.deepEqual(['anomaly', 'resolved', 'anomaly'], audit().filter((e) => e.event !== 'action').map((e) => e.event));
  assert.deepEqual(['ok', 'exists'], audit().filter((e) => e.action === 'halt').map((e) => e.result));
  d.cleanup();
});

test('a kind that is quiet while halted keeps its episode open instead of resolving when .HALT appears', async () => {
  const { d, run, actions, audit } = setup();
  await actions.reconcile(run, [stall], 1000, false);
  await actions.reconcile(run, [], 1001, true);
  assert.equal(0, audit().filter((e) => e.event === 'resolved').length);
  d.cleanup();
});

test('two kinds at once: both are audited, and the more important one is left in .anomaly_type', async () => {
  const { d, run, actions, audit, read } = setup(false);
  await actions.reconcile(run, [flat, stall], 1000, false);
  assert.equal('heartbeat_stall\n', read('.anomaly_type'));
  assert.equal(undefined, read('.HALT'));
  assert.deepEqual(['throughput_flatline', 'heartbeat_stall'], audit().filter((e) => e.event === 'anomaly').map((e) => e.kind));
  d.cleanup();
});

test('a failed write is counted, audited and retried at the next evaluation until it succeeds', async () => {
  const { d, run, actions, audit, read, dir, stats } = setup();
  mkdirSync(join(dir, '.anomaly_type'));
  await assert.rejects(actions.reconcile(run, [stall], 1000, false));
  assert.equal(1, stats.actions.get('anomaly_type|failed'));
  assert.equal('halt: heartbeat_stall\n', read('.HALT')); // the other actions still went ahead
  rmdirSync(join(dir, '.anomaly_type'));
  await actions.reconcile(run, [stall], 1010, false);
  assert.equal('heartbeat_stall\n', read('.anomaly_type'));
  assert.deepEqual(['failed', 'ok'], audit().filter((e) => e.action === 'anomaly_type').map((e) => e.result));
  assert.equal(1, audit().filter((e) => e.event === 'anomaly').length);
  d.cleanup();
});

test('a restart reads the audit log back: the open episode continues and nothing is written twice', async () => {
  const { d, run, actions, mk, audit, dir } = setup();
  await actions.reconcile(run, [stall], 1000, false);
  rmSync(join(dir, '.anomaly_type'));
  const again = mk();
  await again.reconcile(run, [stall], 1100, false);
  assert.equal(false, existsSync(join(dir, '.anomaly_type')));
  assert.equal(1, audit().filter((e) => e.event === 'anomaly').length);
  assert.equal(3, audit().filter((e) => e.event === 'action').length);
  d.cleanup();
});

test('symlinks planted at .HALT and at the temp paths are never followed', async () => {
  const { d, run, actions, dir, audit } = setup();
  const victim = join(d.path, 'victim');
  writeFileSync(victim, 'keep\n');
  symlinkSync(victim, join(dir, '.HALT'));
  symlinkSync(victim, join(dir, '.anomaly_type'));
  await actions.reconcile(run, [stall], 1000, false);
  assert.equal('keep\n', readFileSync(victim, 'utf8'));
  // .anomaly_type's symlink was replaced by a file; .HALT's was left alone and counted as present.
  assert.equal('heartbeat_stall\n', readFileSync(join(dir, '.anomaly_type'), 'utf8'));
  assert.equal('exists', audit().find((e) => e.action === 'halt')!.result);
  d.cleanup();
});

test('a run directory swapped for a symlink elsewhere is refused: nothing is written outside', async () => {
  const { d, run, actions, dir } = setup();
  const elsewhere = join(d.path, 'elsewhere');
  mkdirSync(elsewhere);
  renameSync(dir, join(d.path, 'moved'));
  symlinkSync(elsewhere, dir);
  await actions.reconcile(run, [stall], 1000, false).catch(() => undefined);
  assert.equal(false, existsSync(join(elsewhere, '.HALT')));
  assert.equal(false, existsSync(join(elsewhere, '.anomaly_type')));
  d.cleanup();
});
