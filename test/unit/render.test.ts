// The /metrics renderer keeps what the previous scrape wrote and copies the rows whose values
// did not change. These tests hold it to the rule that matters: a kept renderer writes exactly
// the bytes a renderer without any history writes, after any sequence of state changes.
//
// Replay a failure with TW_MODEL_SEED=<seed> (fast-check prints the seed and the shrunk sequence).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { defaultConfig } from '../../src/config/settings.js';
import { ANOMALY_KINDS } from '../../src/detect/kinds.js';
import { makeLogger } from '../../src/log.js';
import { MetricsRenderer } from '../../src/metrics/render.js';
import type { HeartbeatRecord } from '../../src/parse/line.js';
import { newRankState, reduce } from '../../src/state/rank.js';
import { Run, Watcher } from '../../src/watch/watcher.js';
import { parseExposition } from '../helpers/proc.js';

const RUN_NAMES = ['a', 'rün "x" \\ y', 'c'];

/** A watcher with three runs and no files: state is set by hand, as the sinks would. */
function fleet(): Watcher {
  const config = defaultConfig();
  config['watch.crash-detect'] = true;
  const w = new Watcher(config, makeLogger('silent', 'json'));
  for (const name of RUN_NAMES) w.runs.set(`/r/${name}`, new Run(name, `/r/${name}`, `/r/${name}`, () => undefined));
  return w;
}

const params = (w: Watcher) => {
  const t = w.thresholds;
  return {
    gateEntropyMin: t.gateEntropyMin,
    gateMaxThreshold: t.gateMaxThreshold,
    gateCollapseFrac: t.gateCollapseFrac,
    fetchStallRatio: t.fetchStallRatio,
    fetchWarmupN: t.fetchWarmupN,
  };
};

function record(w: Watcher, runIdx: number, rec: HeartbeatRecord): void {
  const run = [...w.runs.values()][runIdx];
  let s = run.ranks.get(rec.rank);
  if (!s) run.ranks.set(rec.rank, (s = newRankState(rec.rank)));
  reduce(s, rec, params(w));
}

const text = (chunks: Buffer[]) => Buffer.concat(chunks).toString('utf8');

type Op =
  | { k: 'record'; run: number; rec: HeartbeatRecord }
  | { k: 'dropRank'; run: number; rank: number }
  | { k: 'expire'; run: number }
  | { k: 'anomalies'; run: number; ranks: number[]; kind: number }
  | { k: 'alive'; run: number; pid: number; alive: boolean }
  | { k: 'halted'; run: number }
  | { k: 'csv'; run: number; step: number; loss: number }
  | { k: 'tick'; dt: number };

// Values whose texts are equal although the numbers are not (-0 and 0, every NaN), the longest
// texts a number can have, and small integers.
const value = fc.oneof(
  fc.constantFrom(0, -0, NaN, Infinity, -Infinity, 1, 2, 2.5, -0.0000012345678901234567, -1.7976931348623157e308, 5e-324, 123456789012345680000),
  fc.double(),
  fc.integer({ min: -5, max: 50 }),
);
const maybe = fc.option(value, { nil: undefined });
const recArb: fc.Arbitrary<HeartbeatRecord> = fc.record({
  ts: fc.integer({ min: 0, max: 50 }).map((x) => 1000 + x / 2),
  rank: fc.integer({ min: 0, max: 3 }),
  step: fc.integer({ min: 0, max: 30 }),
  msg: fc.constantFrom('progress', 'progress', 'beat', 'step_end', 'boot', 'watchdog_dump', 'custom'),
  pid: fc.option(fc.integer({ min: 100, max: 103 }), { nil: undefined }),
  loss: maybe,
  toks_per_s: maybe,
  dt_fetch_s: fc.option(fc.constantFrom(0, 0.002, 0.003, 0.5), { nil: undefined }),
  grad_norm: maybe,
  gpu_mem_alloc: fc.option(fc.constantFrom(1, 30512.5), { nil: undefined }),
  gpu_mem_reserved: fc.option(fc.constantFrom(0, 40960), { nil: undefined }),
  gate_entropy_mean: maybe,
  gate_entropy_min: maybe,
  gate_max_gate: maybe,
  gate_collapse_frac: maybe,
});
const runIdx = fc.integer({ min: 0, max: RUN_NAMES.length - 1 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ k: fc.constant('record' as const), run: runIdx, rec: recArb }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('dropRank' as const), run: runIdx, rank: fc.integer({ min: 0, max: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('expire' as const), run: runIdx }) },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant('anomalies' as const),
      run: runIdx,
      ranks: fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 3 }),
      kind: fc.integer({ min: 0, max: ANOMALY_KINDS.length - 1 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('alive' as const), run: runIdx, pid: fc.integer({ min: 100, max: 103 }), alive: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('halted' as const), run: runIdx }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('csv' as const), run: runIdx, step: fc.integer({ min: 0, max: 9 }), loss: value }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('tick' as const), dt: fc.constantFrom(0, 0, 0.5, 300) }) },
);

function apply(w: Watcher, op: Op): void {
  if (op.k === 'tick') return;
  const run = [...w.runs.values()][op.run];
  if (op.k === 'record') record(w, op.run, op.rec);
  else if (op.k === 'dropRank') run.ranks.delete(op.rank);
  else if (op.k === 'expire') run.expired = !run.expired;
  else if (op.k === 'anomalies') run.anomalies = op.ranks.map((rank) => ({ kind: ANOMALY_KINDS[op.kind].name, rank, value: 1, threshold: 1, message: '' }));
  else if (op.k === 'alive') run.procs.set(op.pid, op.alive ? 'alive' : 'gone');
  else if (op.k === 'halted') run.halted = !run.halted;
  else run.csv = { rows: op.step + 1, step: op.step, loss: op.loss, throughputZero: 0 };
}

test('a renderer that keeps earlier scrapes writes the same bytes as one without history, after any sequence of changes', () => {
  const seed = process.env.TW_MODEL_SEED ? Number(process.env.TW_MODEL_SEED) : undefined;
  fc.assert(
    fc.property(fc.array(opArb, { minLength: 1, maxLength: 60 }), (ops) => {
      const w = fleet();
      const kept = new MetricsRenderer(w, '1.0');
      let now = 1010;
      for (const op of ops) {
        apply(w, op);
        if (op.k === 'tick') now += op.dt;
        assert.equal(text(kept.render(now)), text(new MetricsRenderer(w, '1.0').render(now)));
      }
    }),
    { numRuns: 300, seed },
  );
});

test('a value that changed between two scrapes is shown new in the second, while its unchanged neighbours are kept', () => {
  const w = fleet();
  const r = new MetricsRenderer(w, '1.0');
  for (const rank of [0, 1]) record(w, 0, { ts: 1000, rank, step: 7, msg: 'progress', loss: 2.5, toks_per_s: 100 });
  const first = parseExposition(text(r.render(1001)));
  assert.equal(2.5, first.get('trainwatch_loss{run="a",rank="1"}'));
  record(w, 0, { ts: 1001, rank: 1, step: 8, msg: 'progress', loss: 2.25, toks_per_s: 100 });
  const second = parseExposition(text(r.render(1001)));
  assert.equal(2.25, second.get('trainwatch_loss{run="a",rank="1"}'));
  assert.equal(8, second.get('trainwatch_step{run="a",rank="1"}'));
  assert.equal(2.5, second.get('trainwatch_loss{run="a",rank="0"}'));
  assert.equal(0, second.get('trainwatch_heartbeat_age_seconds{run="a",rank="1"}'));
  assert.equal(1, second.get('trainwatch_heartbeat_age_seconds{run="a",rank="0"}'));
});

test('the longest texts of numbers, NaN and infinities are written whole', () => {
  const w = fleet();
  const extremes = {
    loss: -0.0000012345678901234567,
    toks_per_s: -1.7976931348623157e308,
    grad_norm: NaN,
    dt_fetch_s: 0.002,
    gate_entropy_mean: -Infinity,
    gate_max_gate: 5e-324,
  };
  record(w, 1, { ts: 1000, rank: 3, step: 1, msg: 'progress', ...extremes });
  const out = text(new MetricsRenderer(w, '1.0').render(1000));
  const lab = '{run="rün \\"x\\" \\\\ y",rank="3"}';
  for (const line of [
    `trainwatch_loss${lab} -0.0000012345678901234567`,
    `trainwatch_tokens_per_second${lab} -1.7976931348623157e+308`,
    `trainwatch_grad_norm${lab} NaN`,
    `trainwatch_gate_entropy_mean${lab} -Inf`,
    `trainwatch_gate_max_ratio${lab} 5e-324`,
  ]) {
    assert.equal(true, out.includes(`\n${line}\n`), line);
  }
});

test('a run that expires or loses a rank loses those series at the next scrape', () => {
  const w = fleet();
  const r = new MetricsRenderer(w, '1.0');
  for (const run of [0, 2]) for (const rank of [0, 1]) record(w, run, { ts: 1000, rank, step: 3, msg: 'beat' });
  r.render(1000);
  const runs = [...w.runs.values()];
  runs[0].expired = true;
  runs[2].ranks.delete(1);
  const m = parseExposition(text(r.render(1000)));
  assert.equal(undefined, m.get('trainwatch_step{run="a",rank="0"}'));
  assert.equal(undefined, m.get('trainwatch_step{run="c",rank="1"}'));
  assert.equal(3, m.get('trainwatch_step{run="c",rank="0"}'));
  assert.equal(1, m.get('trainwatch_run_ranks{run="c"}'));
});
