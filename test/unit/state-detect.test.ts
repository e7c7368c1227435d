import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultConfig, thresholdsOf, type Thresholds } from '../../src/config/settings.js';
import { detectRun, effectiveStallS, nextStallDeadline, stepLags } from '../../src/detect/detect.js';
import { ANOMALY_KINDS } from '../../src/detect/kinds.js';
import type { HeartbeatRecord } from '../../src/parse/line.js';
import { newRankState, reduce, type RankState } from '../../src/state/rank.js';
import { newCsvState, reduceCsv } from '../../src/state/run.js';

const T: Thresholds = thresholdsOf(defaultConfig());
const P = {
  gateEntropyMin: T.gateEntropyMin,
  gateMaxThreshold: T.gateMaxThreshold,
  gateCollapseFrac: T.gateCollapseFrac,
  fetchStallRatio: T.fetchStallRatio,
  fetchWarmupN: T.fetchWarmupN,
};

let clock = 1000;
function rec(fields: Partial<HeartbeatRecord> = {}): HeartbeatRecord {
  clock += 1;
  return { ts: clock, rank: 0, step: clock, msg: 'progress', loss: 3 - clock / 1e5, toks_per_s: 1000, grad_norm: 1, ...fields };
}
function feed(records: HeartbeatRecord[], s: RankState = newRankState(0)): RankState {
  for (const r of records) reduce(s, r, P);
  return s;
}
const kinds = (s: RankState, now = clock, t = T): string[] => detectRun({ ranks: [s], halted: false }, t, now).map((a) => a.kind);
const times = <X>(n: number, f: (i: number) => X) => Array.from({ length: n }, (_, i) => f(i));

// Every count rule at its boundary: N-1 records silent, N fires, a good record clears it.
const countRules: Array<[string, number, Partial<HeartbeatRecord>]> = [
  ['throughput_flatline', T.flatlineN, { toks_per_s: 0 }],
  ['loss_flatline', T.lossFlatlineN, { loss: 2.25 }],
  ['zero_grad', T.gradZeroN, { grad_norm: 0 }],
  ['gate_collapse', T.gateCollapseN, { gate_entropy_mean: 0.05 }],
  ['nonfinite_loss', T.nonfiniteN, { loss: NaN }],
];
for (const [kind, n, bad] of countRules) {
  test(`${kind}: ${n - 1} bad progress records are silent, the ${n}th fires, a good one clears it`, () => {
    const s = feed(times(5, () => rec()));
    feed(
      times(n - 1, () => rec(bad)),
      s,
    );
    assert.equal(false, kinds(s).includes(kind));
    feed([rec(bad)], s);
    assert.equal(true, kinds(s).includes(kind));
    feed([rec({ gate_entropy_mean: 0.9, loss: 1.0 })], s);
    assert.equal(false, kinds(s).includes(kind));
  });
}

test('throughput_flatline counts only progress records: beats and step_end in between do not reset or add', () => {
  const s = feed(times(T.flatlineN - 1, () => rec({ toks_per_s: 0 })));
  feed([rec({ msg: 'beat', toks_per_s: undefined }), rec({ msg: 'step_end', toks_per_s: 5 })], s);
  assert.equal(T.flatlineN - 1, s.streaks.throughputZero);
  feed([rec({ toks_per_s: -1 })], s);
  assert.deepEqual(['throughput_flatline'], kinds(s));
});

test('loss_flatline is disabled by NSA_WATCH_LOSS_FLATLINE_N=0', () => {
  const s = feed(times(50, () => rec({ loss: 2 })));
  assert.equal(true, kinds(s).includes('loss_flatline'));
  assert.equal(false, kinds(s, clock, { ...T, lossFlatlineN: 0 }).includes('loss_flatline'));
});

test('heartbeat_stall fires only when the newest liveness record is older than the threshold', () => {
  const s = feed([rec()]);
  const last = s.lastLivenessTs!;
  assert.deepEqual([], kinds(s, last + T.stallS));
  assert.deepEqual(['heartbeat_stall'], kinds(s, last + T.stallS + 0.001));
  assert.equal(last + T.stallS, nextStallDeadline({ ranks: [s], halted: false }, T, last + 1));
});

test('watchdog_dump records are not liveness, and a dump newer than the last beat is itself a stall', () => {
  const s = feed([rec()]);
  const last = s.lastLivenessTs!;
  feed([rec({ msg: 'watchdog_dump' })], s);
  assert.equal(last, s.lastLivenessTs);
  assert.equal(1, s.records.watchdog_dump);
  assert.deepEqual(['heartbeat_stall'], kinds(s, last + 1));
});

test('a halted run (.HALT present) is not reported as stalled', () => {
  const s = feed([rec()]);
  assert.deepEqual(
    [],
    detectRun({ ranks: [s], halted: true }, T, clock + 10 * T.stallS).map((a) => a.kind),
  );
  assert.equal(undefined, nextStallDeadline({ ranks: [s], halted: true }, T, clock));
});

test('startup grace: between boot and the first progress record the stall threshold is the grace', () => {
  const s = feed([rec({ msg: 'boot', step: 0 })]);
  const boot = s.bootTs!;
  assert.equal(Math.max(T.stallS, T.startupGraceS), effectiveStallS(s, T));
  assert.deepEqual([], kinds(s, boot + T.stallS + 1));
  assert.deepEqual(['heartbeat_stall'], kinds(s, boot + T.startupGraceS + 1));
  feed([rec()], s);
  assert.equal(T.stallS, effectiveStallS(s, T));
});

test('a boot record resets the streaks of the previous process', () => {
  const s = feed(times(3, () => rec({ toks_per_s: 0 })));
  assert.equal(3, s.streaks.throughputZero);
  feed([rec({ msg: 'boot', step: 0 })], s);
  assert.equal(0, s.streaks.throughputZero);
});

test('fetch_stall: silent during warm-up, fires on a spike above ratio x baseline, and spikes stay out of the baseline', () => {
  const s = feed(times(T.fetchWarmupN, () => rec({ dt_fetch_s: 0.1 })));
  assert.equal(false, kinds(s).includes('fetch_stall'));
  feed([rec({ dt_fetch_s: 0.1 * T.fetchStallRatio * 0.95 })], s);
  assert.equal(false, kinds(s).includes('fetch_stall'));
  feed([rec({ dt_fetch_s: 0.1 * T.fetchStallRatio * 1.5 })], s);
  assert.equal(true, kinds(s).includes('fetch_stall'));
  const baseline = s.fetchBaseline!;
  feed(
    times(20, () => rec({ dt_fetch_s: 5 })),
    s,
  );
  assert.equal(baseline, s.fetchBaseline);
  assert.equal(true, kinds(s).includes('fetch_stall'));
});

test('fetch_stall during warm-up never fires, however large the sample', () => {
  const s = feed([rec({ dt_fetch_s: 0.1 }), rec({ dt_fetch_s: 100 })]);
  assert.equal(false, kinds(s).includes('fetch_stall'));
});

test('straggler: a rank N steps behind its most advanced peer at the same moment fires; N-1 and a lone rank do not', () => {
  const a = feed([rec({ rank: 0, step: 1000 })], newRankState(0));
  const b = feed([rec({ rank: 1, step: 1000 - T.stragglerSteps + 1 })], newRankState(1));
  const k = () => detectRun({ ranks: [a, b], halted: false }, T, clock).map((x) => `${x.kind}:${x.rank}`);
  assert.deepEqual([], k());
  feed([rec({ rank: 1, step: 1000 - T.stragglerSteps })], b);
  assert.deepEqual(['straggler:1'], k());
  assert.deepEqual(
    [],
    detectRun({ ranks: [b], halted: false }, T, clock).map((x) => x.kind),
  );
});

test('straggler compares steps at the same moment: a peer read later, or a hung rank, is not a straggler', () => {
  // Rank 1's newest record is older than rank 0's last 300 steps: at that moment they were level.
  const a = feed([rec({ rank: 0, step: 10 })], newRankState(0));
  const b = feed([rec({ rank: 1, step: 10 })], newRankState(1));
  for (let i = 11; i <= 310; i++) feed([rec({ rank: 0, step: i })], a);
  assert.deepEqual(
    new Map([
      [0, 0],
      [1, 0],
    ]),
    stepLags([a, b]),
  );
  assert.deepEqual(
    [],
    detectRun({ ranks: [a, b], halted: false }, T, b.lastLivenessTs!).map((x) => x.kind),
  );
});

test('trainer_crash: only with crash detection on, only when the pid is known to be gone and no .HALT is there', () => {
  const s = feed([rec({ pid: 4242 })]);
  const run = (alive: boolean | undefined, halted = false, crashDetect = true) =>
    detectRun({ ranks: [s], halted, pidAlive: () => alive }, { ...T, crashDetect }, clock).map((a) => a.kind);
  assert.deepEqual(['trainer_crash'], run(false));
  assert.deepEqual([], run(true));
  assert.deepEqual([], run(undefined));
  assert.deepEqual([], run(false, true));
  assert.deepEqual([], run(false, false, false));
});

test('training.csv rows with toks_per_s <= 0 drive throughput_flatline on rank 0', () => {
  const csv = newCsvState();
  for (let i = 0; i < T.flatlineN - 1; i++) reduceCsv(csv, { step: i, toks_per_s: 0 });
  assert.deepEqual([], detectRun({ ranks: [], csv, halted: false }, T, clock));
  reduceCsv(csv, { step: 99, toks_per_s: 0 });
  assert.deepEqual(
    ['throughput_flatline:0'],
    detectRun({ ranks: [], csv, halted: false }, T, clock).map((a) => `${a.kind}:${a.rank}`),
  );
});

test('state memory is bounded: a million records leave a fixed-size state', () => {
  const s = newRankState(0);
  for (let i = 0; i < 1_000_000; i++) reduce(s, { ts: i, rank: 0, step: i, msg: 'progress', toks_per_s: i, loss: i }, P);
  assert.equal(40, s.toksHistory.length);
  assert.equal(1_000_000, s.records.progress);
});

test('the detector emits every kind of the one list, and only those: one constructed run per kind', () => {
  const bad = (n: number, f: Partial<HeartbeatRecord>) => feed([...times(5, () => rec()), ...times(n, () => rec(f))]);
  const lagging = () => [feed([rec({ rank: 0, step: 5000 })], newRankState(0)), feed([rec({ rank: 1, step: 5000 - T.stragglerSteps })], newRankState(1))];
  const fetchSpike = () => feed([...times(T.fetchWarmupN, () => rec({ dt_fetch_s: 0.1 })), rec({ dt_fetch_s: 0.1 * T.fetchStallRatio * 2 })]);
  const fresh = feed([rec({ pid: 4242 })]);
  const runs: Array<[string, () => string[]]> = [
    ['heartbeat_stall', () => kinds(fresh, fresh.lastLivenessTs! + T.stallS + 1)],
    ['throughput_flatline', () => kinds(bad(T.flatlineN, { toks_per_s: 0 }))],
    ['loss_flatline', () => kinds(bad(T.lossFlatlineN, { loss: 2.25 }))],
    ['zero_grad', () => kinds(bad(T.gradZeroN, { grad_norm: 0 }))],
    ['fetch_stall', () => kinds(fetchSpike())],
    ['gate_collapse', () => kinds(bad(T.gateCollapseN, { gate_entropy_mean: 0.05 }))],
    ['nonfinite_loss', () => kinds(bad(T.nonfiniteN, { loss: NaN }))],
    ['straggler', () => detectRun({ ranks: lagging(), halted: false }, T, clock).map((a) => a.kind)],
    [
      'trainer_crash',
      () => detectRun({ ranks: [fresh], halted: false, pidAlive: () => false }, { ...T, crashDetect: true }, fresh.lastLivenessTs!).map((a) => a.kind),
    ],
  ];
  const emitted = new Set<string>();
  for (const [kind, run] of runs) {
    const got = run();
    assert.equal(true, got.includes(kind), `the run built for ${kind} gave ${JSON.stringify(got)}`);
    for (const k of got) emitted.add(k);
  }
  assert.deepEqual(ANOMALY_KINDS.map((k) => k.name).sort(), [...emitted].sort(), 'kinds the detector emitted vs. the one list');
});
