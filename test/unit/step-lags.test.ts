// stepLags against the O(ranks²) definition it replaced, on random runs (fast-check).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { stepLags } from '../../src/detect/detect.js';
import { admitRank } from '../../src/parse/rank-cap.js';
import { newRankState, reduce, STEP_HISTORY, type RankState } from '../../src/state/rank.js';

const P = { gateEntropyMin: 0.2, gateMaxThreshold: 0.9, gateCollapseFrac: 0.5, fetchStallRatio: 3, fetchWarmupN: 5 };

/** The original definition, kept as the reference: every rank asks every peer. */
function referenceLags(ranks: readonly RankState[]): Map<number, number> {
  const stepAt = (s: RankState, ts: number) => {
    const h = s.stepHistory;
    for (let i = h.length - 2; i >= 0; i -= 2) if (h[i] <= ts) return h[i + 1];
    return undefined;
  };
  const out = new Map<number, number>();
  for (const s of ranks) {
    if (s.step === undefined || s.lastLivenessTs === undefined) continue;
    let lead = s.step;
    for (const p of ranks) {
      if (p === s) continue;
      const ps = stepAt(p, s.lastLivenessTs);
      if (ps !== undefined && ps > lead) lead = ps;
    }
    out.set(s.rank, lead - s.step);
  }
  return out;
}

const recordArb = fc.record({
  // Few distinct times and steps: ties and out-of-order records are common.
  ts: fc.integer({ min: 0, max: 40 }),
  step: fc.integer({ min: 0, max: 60 }),
  msg: fc.constantFrom('progress', 'progress', 'beat', 'boot', 'watchdog_dump'),
});

function build(histories: Array<Array<{ ts: number; step: number; msg: string }>>): RankState[] {
  return histories.map((recs, rank) => {
    const s = newRankState(rank);
    for (const r of recs) reduce(s, { ...r, rank }, P);
    return s;
  });
}

test('stepLags gives the same lags as the all-pairs definition on random runs (out-of-order times, ties, restarts, long histories)', () => {
  fc.assert(
    fc.property(fc.array(fc.array(recordArb, { maxLength: STEP_HISTORY + 10 }), { maxLength: 12 }), (histories) => {
      const ranks = build(histories);
      assert.deepEqual(referenceLags(ranks), stepLags(ranks));
    }),
    { numRuns: 3000 },
  );
});

test('stepLags matches the definition for times of any spread and skew (clusters, outliers, huge and negative values)', () => {
  const tsArb = fc.oneof(
    fc.integer({ min: 0, max: 5 }),
    fc.double({ min: -1e300, max: 1e300, noNaN: true }),
    fc.double({ min: 1e9, max: 1e9 + 1, noNaN: true }),
  );
  const rec = fc.record({ ts: tsArb, step: fc.integer({ min: 0, max: 60 }), msg: fc.constant('progress') });
  fc.assert(
    fc.property(fc.array(fc.array(rec, { maxLength: STEP_HISTORY + 4 }), { maxLength: 16 }), (histories) => {
      const ranks = build(histories);
      assert.deepEqual(referenceLags(ranks), stepLags(ranks));
    }),
    { numRuns: 2000 },
  );
});

test('stepLags on a run whose ranks report monotonically (the healthy case) matches the definition too', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 1, max: 40 })), { minLength: 1, maxLength: 40 }), (specs) => {
      const ranks = specs.map(([delay, n], rank) => {
        const s = newRankState(rank);
        for (let i = 0; i < n; i++) reduce(s, { ts: 1000 + delay + i, rank, step: i, msg: 'progress' }, P);
        return s;
      });
      assert.deepEqual(referenceLags(ranks), stepLags(ranks));
    }),
    { numRuns: 500 },
  );
});

test('twenty thousand ranks in one run: every rank gets its lag, the one behind is the only one lagging', () => {
  const ranks: RankState[] = [];
  for (let rank = 0; rank < 20_000; rank++) {
    const s = newRankState(rank);
    for (let i = 0; i < 3; i++) reduce(s, { ts: 100 + i, rank, step: rank === 7 ? i : 10 + i, msg: 'progress' }, P);
    ranks.push(s);
  }
  const lags = stepLags(ranks);
  assert.equal(20_000, lags.size);
  assert.equal(10, lags.get(7));
  assert.equal(1, new Set([...lags.values()].filter((v) => v !== 0)).size);
});

test('rank cap: a tracked rank is always admitted, a new one only while the run has fewer than the cap', () => {
  const known = new Map([
    [0, 'a'],
    [1, 'b'],
  ]);
  assert.equal(true, admitRank(known, 1, 2));
  assert.equal(false, admitRank(known, 2, 2));
  assert.equal(true, admitRank(known, 2, 3));
});
