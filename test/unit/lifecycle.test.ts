// The run model, pure: liveness roles, the lifecycle states and every transition between them,
// with an injected clock (`now` is an argument; nothing here sleeps or spawns).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultConfig, thresholdsOf, type Thresholds } from '../../src/config/settings.js';
import { detectRun, primaryOf, stallDeadlines, type RunFacts } from '../../src/detect/detect.js';
import type { HeartbeatRecord } from '../../src/parse/line.js';
import {
  attemptKeyOf,
  isNewAttempt,
  livenessOf,
  parseHaltLine,
  runStateOf,
  type HaltFact,
  type LifeFacts,
  type ProcFact,
  type RunState,
} from '../../src/state/lifecycle.js';
import { newRankState, rankRole, reduce, type RankState } from '../../src/state/rank.js';

const T: Thresholds = { ...thresholdsOf(defaultConfig()), stallS: 180, startupGraceS: 900 };
const P = {
  gateEntropyMin: T.gateEntropyMin,
  gateMaxThreshold: T.gateMaxThreshold,
  gateCollapseFrac: T.gateCollapseFrac,
  fetchStallRatio: T.fetchStallRatio,
  fetchWarmupN: T.fetchWarmupN,
};

/** A run written as the real trainer writes it: rank 0 logs, ranks >= 1 only boot, every rank's watchdog thread dumps after 180 s of its own silence. */
class Trainer {
  ranks: RankState[];
  pids: number[];
  constructor(
    n: number,
    public t: number,
    pid0 = 100,
  ) {
    this.ranks = Array.from({ length: n }, (_, r) => newRankState(r));
    this.pids = this.ranks.map((_, r) => pid0 + r);
  }
  write(rank: number, msg: string, extra: Partial<HeartbeatRecord> = {}): void {
    reduce(this.ranks[rank], { ts: this.t, rank, step: 0, msg, pid: this.pids[rank], ...extra }, P);
  }
  boot(): void {
    for (let r = 0; r < this.ranks.length; r++) this.write(r, 'boot');
  }
  /** rank 0 logs every `every` seconds for `secs`; every other rank's watchdog dumps each 180 s of silence */
  train(secs: number, every = 10, extra: Partial<HeartbeatRecord> = {}): void {
    const end = this.t + secs;
    const lastWrite = this.ranks.map((s) => Math.max(s.lastLivenessTs ?? 0, s.lastDumpTs ?? 0));
    while (this.t + every <= end) {
      this.t += every;
      this.write(0, 'progress', { loss: 3 - this.t / 1e6, toks_per_s: 1000, grad_norm: 1, ...extra });
      this.write(0, 'step_end');
      lastWrite[0] = this.t;
      for (let r = 1; r < this.ranks.length; r++) {
        if (this.t - lastWrite[r] >= 180) {
          this.write(r, 'watchdog_dump');
          lastWrite[r] = this.t;
        }
      }
    }
  }
}

const facts = (tr: Trainer, more: Partial<RunFacts> = {}): RunFacts => ({ ranks: tr.ranks, halted: false, ...more });
const kinds = (tr: Trainer, now: number, more: Partial<RunFacts> = {}) => detectRun(facts(tr, more), T, now).map((a) => `${a.kind}@${a.rank}`);

test('a healthy 2-rank run of the real layout is never stalled, though rank 1 writes only boot and its watchdog dumps every 3 minutes', () => {
  const tr = new Trainer(2, 1000);
  tr.boot();
  tr.train(3600);
  assert.ok(tr.ranks[1].records.watchdog_dump >= 15, 'the simulated trainer dumped on rank 1');
  assert.equal('periodic', rankRole(tr.ranks[0]));
  assert.equal('boot_only', rankRole(tr.ranks[1]));
  for (let dt = 0; dt <= 10; dt += 1) assert.deepEqual([], kinds(tr, tr.t + dt));
});

test('rank 0 hangs: stalled strictly after the threshold, and at once when its own watchdog dumps', () => {
  const tr = new Trainer(2, 1000);
  tr.boot();
  tr.train(600);
  const last = tr.t;
  assert.deepEqual([], kinds(tr, last + 180));
  assert.deepEqual(['heartbeat_stall@0'], kinds(tr, last + 180.001));
  tr.t = last + 100;
  tr.write(0, 'watchdog_dump');
  assert.deepEqual(['heartbeat_stall@0'], kinds(tr, last + 100));
});

test("a boot-only rank's dump counts only when the periodic writers went silent before it, for longer than their cadence allows", () => {
  const tr = new Trainer(2, 1000);
  tr.boot();
  tr.train(600, 10); // cadence 10 s: the window is max(180/3, 3 * 10) = 60 s
  const last = tr.t;
  tr.t = last + 5;
  tr.write(1, 'watchdog_dump'); // rank 0 wrote 5 s before: within its cadence
  assert.deepEqual([], kinds(tr, last + 5));
  assert.deepEqual([], kinds(tr, last + 59));
  assert.deepEqual(['heartbeat_stall@1'], kinds(tr, last + 60));
  assert.equal(last + 60, stallDeadlines(facts(tr), T).get(1)!.at);
  tr.t = last + 61;
  tr.train(10, 10); // rank 0 writes again: the dump is explained away
  assert.deepEqual([], kinds(tr, tr.t));
});

test('the startup grace ends for every rank when the run shows progress, not when each rank does', () => {
  const tr = new Trainer(2, 1000);
  tr.boot();
  assert.equal('startup', stallDeadlines(facts(tr), T).get(1)!.basis);
  assert.deepEqual([], kinds(tr, 1000 + 899));
  tr.t += 30;
  tr.write(1, 'beat');
  tr.write(0, 'progress', { toks_per_s: 1 });
  tr.t += 1;
  tr.write(0, 'progress', { toks_per_s: 1 });
  // rank 1 beat once and froze; rank 0 trains on: rank 1's own threshold applies now.
  assert.equal('silence', stallDeadlines(facts(tr), T).get(1)!.basis);
  assert.deepEqual(
    ['heartbeat_stall@1'],
    kinds(tr, 1030 + 181).filter((k) => k.endsWith('@1')),
  );
});

test('during startup, dumps count for nothing and every rank has the grace', () => {
  const tr = new Trainer(2, 1000);
  tr.boot();
  tr.t += 200;
  tr.write(0, 'watchdog_dump');
  tr.write(1, 'watchdog_dump');
  assert.deepEqual([], kinds(tr, tr.t));
  assert.deepEqual(['heartbeat_stall@0', 'heartbeat_stall@1'], kinds(tr, 1000 + 900.001));
});

test('a dump from another process than the one the rank records come from is ignored', () => {
  const tr = new Trainer(1, 1000);
  tr.boot();
  tr.train(100);
  reduce(tr.ranks[0], { ts: tr.t + 1, rank: 0, step: 0, msg: 'watchdog_dump', pid: 999 }, P);
  assert.equal(undefined, tr.ranks[0].lastDumpTs);
  assert.deepEqual([], kinds(tr, tr.t + 2));
});

test('a trainer known to have exited is never stalled, whatever its silence', () => {
  const tr = new Trainer(2, 1000);
  tr.boot();
  tr.train(600);
  const procs = new Map<number, ProcFact>(tr.pids.map((p) => [p, 'gone']));
  const liveness = livenessOf(tr.ranks, procs);
  assert.equal('exited', liveness);
  assert.deepEqual([], kinds(tr, tr.t + 10_000, { liveness }));
  assert.equal(0, stallDeadlines(facts(tr, { liveness }), T).size);
});

test('an acknowledgement hides older evidence: streaks and silence from before it open nothing, however long no new trainer comes', () => {
  const tr = new Trainer(1, 1000);
  tr.boot();
  tr.train(100, 10, { grad_norm: 0 });
  const ack = tr.t + 50;
  assert.deepEqual(['zero_grad@0'], kinds(tr, tr.t));
  assert.deepEqual([], kinds(tr, ack + 1, { ackTs: ack }));
  assert.equal(undefined, stallDeadlines(facts(tr, { ackTs: ack }), T).get(0));
  assert.deepEqual([], kinds(tr, ack + 86_400, { ackTs: ack }));
  tr.t = ack + 10;
  tr.write(0, 'progress', { grad_norm: 0 }); // the fault goes on after the acknowledgement: it counts again
  assert.deepEqual(['zero_grad@0'], kinds(tr, tr.t, { ackTs: ack }));
});

test('the primary anomaly is the highest-priority kind: halting critical kinds before warnings', () => {
  const a = (kind: string, rank = 0) => ({ kind, rank });
  assert.equal('nonfinite_loss', primaryOf([a('fetch_stall'), a('nonfinite_loss', 3), a('straggler')])!.kind);
  assert.equal('heartbeat_stall', primaryOf([a('loss_flatline'), a('heartbeat_stall')])!.kind);
  assert.equal(1, primaryOf([a('zero_grad', 2), a('zero_grad', 1)])!.rank);
  assert.equal(undefined, primaryOf([]));
});

test('a new process on the lowest rank is a new attempt; the key does not depend on reading order', () => {
  const tr = new Trainer(2, 1000);
  tr.boot();
  assert.equal('0/pid:100', attemptKeyOf(tr.ranks));
  assert.equal('0/pid:100', attemptKeyOf([...tr.ranks].reverse()));
  assert.equal(false, isNewAttempt(attemptKeyOf([tr.ranks[1]]), attemptKeyOf(tr.ranks)!), 'rank 0 read after rank 1 is the same attempt');
  tr.pids = [200, 201];
  tr.t += 500;
  tr.boot();
  assert.equal('0/pid:200', attemptKeyOf(tr.ranks));
  assert.equal(true, isNewAttempt('0/pid:100', attemptKeyOf(tr.ranks)!));
  assert.equal(undefined, attemptKeyOf([newRankState(0)]));
});

test('.HALT lines name their kind; anything else names none', () => {
  assert.equal('nan_loss', parseHaltLine('halt: nan_loss\n'));
  assert.equal('heartbeat_stall', parseHaltLine('halt: heartbeat_stall'));
  assert.equal(undefined, parseHaltLine(''));
  assert.equal(undefined, parseHaltLine('please stop\n'));
});

// Every transition of the state diagram in docs/detection.md, through runStateOf.
const base = (tr: Trainer, more: Partial<LifeFacts> = {}): LifeFacts => ({
  ranks: tr.ranks,
  liveness: 'verified',
  halt: { present: false },
  expired: false,
  crashDetect: false,
  stallS: 180,
  ...more,
});
const state = (f: LifeFacts, now: number): RunState => runStateOf(f, now).state;

test('lifecycle: starting → training → anomalous → training', () => {
  const tr = new Trainer(2, 1000);
  tr.boot();
  assert.equal('starting', state(base(tr), tr.t));
  tr.train(20);
  assert.equal('training', state(base(tr), tr.t));
  assert.equal('anomalous', state(base(tr, { primary: { kind: 'zero_grad', rank: 0, severity: 'critical' } }), tr.t));
  assert.equal('training', state(base(tr), tr.t + 1));
});

test('lifecycle: anomalous → halt_requested (trainer runs) → halted (trainer gone), by trainwatch or by the trainer itself', () => {
  const tr = new Trainer(1, 1000);
  tr.boot();
  tr.train(20);
  for (const by of ['trainwatch', 'trainer'] as const) {
    const halt: HaltFact = { present: true, kind: by === 'trainer' ? 'nan_loss' : 'zero_grad', by, since: tr.t };
    const requested = runStateOf(base(tr, { halt }), tr.t);
    assert.equal('halt_requested', requested.state);
    assert.match(requested.reason, by === 'trainer' ? /by the trainer itself: nan_loss/ : /by trainwatch: zero_grad/);
    assert.equal('halted', state(base(tr, { halt, liveness: 'exited' }), tr.t + 5));
  }
});

test('lifecycle: with liveness unknown, a halt is complete once nothing was written for a stall threshold after it', () => {
  const tr = new Trainer(1, 1000);
  tr.boot();
  tr.train(20);
  const halt: HaltFact = { present: true, kind: 'zero_grad', by: 'trainwatch', since: tr.t };
  assert.equal('halt_requested', state(base(tr, { halt, liveness: 'unknown' }), tr.t + 180));
  assert.equal('halted', state(base(tr, { halt, liveness: 'unknown' }), tr.t + 181));
});

test('lifecycle: training → finished when the trainer exits without .HALT; crashed instead with crash detection; finished with an end record either way', () => {
  const tr = new Trainer(2, 1000);
  tr.boot();
  tr.train(60);
  assert.equal('finished', state(base(tr, { liveness: 'exited' }), tr.t + 1));
  assert.equal('crashed', state(base(tr, { liveness: 'exited', crashDetect: true }), tr.t + 1));
  tr.write(0, 'run_end');
  assert.equal('exited', livenessOf(tr.ranks, new Map()));
  assert.equal('finished', state(base(tr, { liveness: 'exited', crashDetect: true }), tr.t + 1));
});

test('lifecycle: halted → (operator removes .HALT) waiting for a new trainer → starting on a new boot', () => {
  const tr = new Trainer(1, 1000);
  tr.boot();
  tr.train(60);
  const ack = tr.t + 30;
  const f = base(tr, { liveness: 'exited', ackTs: ack });
  const waiting = runStateOf(f, ack + 1);
  assert.deepEqual({ state: 'halted', reason: 'cleared for a resume; waiting for a new trainer' }, waiting);
  tr.pids = [300];
  tr.t = ack + 60;
  tr.boot();
  assert.equal('starting', state(base(tr, { liveness: 'verified', ackTs: ack }), tr.t));
});

test('lifecycle: any state → expired past the TTL', () => {
  const tr = new Trainer(1, 1000);
  tr.boot();
  assert.equal('expired', state(base(tr, { expired: true, halt: { present: true } }), tr.t));
});

test('liveness: one visible pid alive keeps the run alive; none visible is unknown', () => {
  const tr = new Trainer(2, 1000);
  tr.boot();
  assert.equal(
    'verified',
    livenessOf(
      tr.ranks,
      new Map<number, ProcFact>([
        [100, 'gone'],
        [101, 'alive'],
      ]),
    ),
  );
  assert.equal('unknown', livenessOf(tr.ranks, new Map()));
  assert.equal('exited', livenessOf(tr.ranks, new Map<number, ProcFact>([[100, 'gone']])));
});
