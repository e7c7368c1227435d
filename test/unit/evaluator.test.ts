// The evaluator with an injected clock and injected process facts: the watcher's rules for
// stalls, finished trainers, halts, acknowledgement and resume, on real control files in a
// temporary directory, with no trainer process and no sleep.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, realpathSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Actions } from '../../src/actions/actions.js';
import { Profiles } from '../../src/config/profiles.js';
import { defaultConfig, thresholdsOf, type Config } from '../../src/config/settings.js';
import { makeLogger } from '../../src/log.js';
import type { HeartbeatRecord } from '../../src/parse/line.js';
import type { ProcFact } from '../../src/state/lifecycle.js';
import { newRankState, reduce } from '../../src/state/rank.js';
import { Evaluator } from '../../src/watch/evaluator.js';
import { Run } from '../../src/watch/run.js';
import { Stats } from '../../src/watch/stats.js';
import { ManualClock } from '../helpers/clock.js';
import { tmpDir } from '../helpers/proc.js';

const quiet = makeLogger('error', 'json', { write: () => true } as unknown as NodeJS.WritableStream);

function setup(over: Partial<Config> = {}) {
  const d = tmpDir('tw-eval-');
  const dir = join(d.path, 'run');
  mkdirSync(dir);
  const config: Config = { ...defaultConfig(), halt: true, 'watch.heartbeat-stall-s': 180, 'watch.startup-grace-s': 900, ...over };
  const t = thresholdsOf(config);
  const clock = new ManualClock(1_000_000);
  const stats = new Stats();
  const actions = new Actions({
    halt: config.halt,
    by: 'test',
    escalateS: 0,
    escalateTermS: 0,
    escalateKillS: 0,
    autoClearHalt: config['watch.auto-clear-halt'],
    log: quiet,
    stats,
  });
  const runs = new Map<string, Run>();
  /** what each pid looks like to the evaluator: the test sets it */
  const procs = new Map<number, ProcFact>();
  const ev = new Evaluator(
    config,
    actions,
    quiet,
    clock,
    { runs, isReady: () => true, isStopped: () => false, rediscover: () => undefined },
    (w) => procs.get(w.pid) ?? 'unknown',
  );
  const run = new Run('run', dir, realpathSync(dir), () => undefined, new Profiles(config).forRun('run'));
  run.instanceIno = statSync(dir).ino;
  runs.set(run.real, run);
  const P = {
    gateEntropyMin: t.gateEntropyMin,
    gateMaxThreshold: t.gateMaxThreshold,
    gateCollapseFrac: t.gateCollapseFrac,
    fetchStallRatio: t.fetchStallRatio,
    fetchWarmupN: t.fetchWarmupN,
  };
  const write = (rank: number, pid: number, msg: string, extra: Partial<HeartbeatRecord> = {}) => {
    let s = run.ranks.get(rank);
    if (!s) run.ranks.set(rank, (s = newRankState(rank)));
    reduce(s, { ts: clock.t, rank, step: 1, msg, pid, loss: 3 - clock.t / 1e7, toks_per_s: 1000, grad_norm: 1, ...extra }, P);
  };
  /** the real trainer's layout: both ranks boot, rank 0 logs every 10 s for `secs` */
  const train = async (secs: number, pid0 = 100) => {
    write(0, pid0, 'boot');
    write(1, pid0 + 1, 'boot');
    procs.set(pid0, 'alive').set(pid0 + 1, 'alive');
    for (let i = 0; i < secs / 10; i++) {
      clock.t += 10;
      write(0, pid0, 'progress');
      write(0, pid0, 'step_end');
    }
    await evaluate();
  };
  const evaluate = async () => {
    await ev.observeControl(run);
    await ev.evaluate(run);
  };
  const read = (f: string) => (existsSync(join(dir, f)) ? readFileSync(join(dir, f), 'utf8') : undefined);
  const cleanup = async () => {
    await actions.close();
    d.cleanup();
  };
  return { clock, procs, run, train, write, evaluate, read, dir, cleanup, settle: evaluate };
}

test('a stalled rank 0 is halted by its stall timer exactly past the deadline', async (t) => {
  const e = setup();
  t.after(e.cleanup);
  await e.train(60);
  assert.equal('training', e.run.life.state);
  const deadline = e.clock.next()!;
  assert.ok(Math.abs(deadline - (e.clock.t + 180)) < 0.1, 'the timer is set for the stall deadline');
  await e.clock.advanceTo(e.clock.t + 179, e.settle);
  assert.equal(undefined, e.read('.HALT'));
  await e.clock.advanceTo(e.clock.t + 2, e.settle);
  assert.equal('halt: heartbeat_stall\n', e.read('.HALT'));
  assert.equal('halt_requested', e.run.life.state);
});

test('a trainer that exited normally is finished: no stall and no .HALT two thresholds after its end', async (t) => {
  const e = setup();
  t.after(e.cleanup);
  await e.train(60);
  e.procs.set(100, 'gone').set(101, 'gone');
  await e.clock.advanceTo(e.clock.t + 360, e.settle);
  await e.evaluate();
  assert.equal(undefined, e.read('.HALT'));
  assert.equal(undefined, e.read('.anomaly_type'));
  assert.equal('finished', e.run.life.state);
});

test('halt, clear as the runbook says, resume: the stale heartbeats are not judged again and the new attempt trains', async (t) => {
  const e = setup();
  t.after(e.cleanup);
  await e.train(60);
  await e.clock.advanceTo(e.clock.t + 181, e.settle);
  assert.equal('halt: heartbeat_stall\n', e.read('.HALT'));
  e.procs.set(100, 'gone').set(101, 'gone');
  await e.evaluate();
  assert.equal('halted', e.run.life.state);
  for (const f of ['.HALT', '.anomaly_type', '.anomaly.json']) rmSync(join(e.dir, f));
  await e.evaluate();
  assert.equal(undefined, e.read('.HALT'), 'not re-halted on the old heartbeats');
  assert.equal('halted', e.run.life.state);
  assert.match(e.run.life.reason, /waiting for a new trainer/);
  e.procs.set(100, 'unknown').set(101, 'unknown'); // even where the old trainer cannot be seen
  await e.clock.advanceTo(e.clock.t + 3600, e.settle);
  await e.evaluate();
  assert.equal(undefined, e.read('.HALT'), 'stale records never stall a cleared run');
  e.clock.t += 1;
  await e.train(60, 200);
  assert.equal(2, e.run.attempt);
  assert.equal('training', e.run.life.state);
  assert.equal(undefined, e.read('.HALT'));
});

test('a fault that recurs after a resume is a new episode and halts again', async (t) => {
  const e = setup();
  t.after(e.cleanup);
  await e.train(60);
  e.clock.t += 10;
  for (let i = 0; i < 3; i++) e.write(0, 100, 'progress', { grad_norm: 0 });
  await e.evaluate();
  assert.equal('halt: zero_grad\n', e.read('.HALT'));
  e.procs.set(100, 'gone').set(101, 'gone');
  for (const f of ['.HALT', '.anomaly_type', '.anomaly.json']) rmSync(join(e.dir, f));
  await e.evaluate();
  e.clock.t += 30;
  await e.train(30, 300);
  for (let i = 0; i < 3; i++) e.write(0, 300, 'progress', { grad_norm: 0 });
  await e.evaluate();
  assert.equal('halt: zero_grad\n', e.read('.HALT'));
  assert.equal('zero_grad\n', e.read('.anomaly_type'));
});

test('with watch.auto-clear-halt, our own .HALT is removed once the trainer it addressed exited', async (t) => {
  const e = setup({ 'watch.auto-clear-halt': true });
  t.after(e.cleanup);
  await e.train(60);
  await e.clock.advanceTo(e.clock.t + 181, e.settle);
  assert.equal('halt: heartbeat_stall\n', e.read('.HALT'));
  await e.evaluate();
  assert.equal('halt: heartbeat_stall\n', e.read('.HALT'), 'kept while the trainer runs');
  e.procs.set(100, 'gone').set(101, 'gone');
  await e.evaluate();
  assert.equal(undefined, e.read('.HALT'));
  assert.equal('halted', e.run.life.state);
  const audit = readFileSync(join(e.dir, '.trainwatch-audit.jsonl'), 'utf8');
  assert.match(audit, /"action":"halt_cleared","result":"ok"/);
});

test('a stall deadline a year ahead (ts in milliseconds) arms a timer of at most an hour, not one that fires at once', async (t) => {
  const e = setup();
  t.after(e.cleanup);
  e.write(0, 100, 'progress');
  e.run.ranks.get(0)!.lastLivenessTs = e.clock.t + 365 * 86400;
  await e.evaluate();
  assert.equal(e.clock.t + 3600, e.clock.next());
});
