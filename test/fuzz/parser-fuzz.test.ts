// Property-based fuzz of line → record → state: at least 1,000,000 generated lines through the
// real HeartbeatSink (bytes in, as a tail delivers them). Nothing may throw, every line is either
// a record or a counted error, and every well-formed record (NaN/Infinity tokens included) is read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { PARSE_ERROR_REASONS } from '../../src/parse/line.js';
import type { RankState } from '../../src/state/rank.js';
import { HeartbeatSink, type RankTable } from '../../src/watch/sinks.js';
import { Stats } from '../../src/watch/stats.js';
import { pyJson } from '../helpers/proc.js';

const BATCHES = 1000;
const PER_BATCH = 1000;

type Gen = { bytes: Buffer; valid: boolean };

const num = fc.oneof(fc.double(), fc.constantFrom(NaN, Infinity, -Infinity, 1e308, -1e308, 5e-324, 0, -0), fc.integer());
const str = fc.oneof(fc.string(), fc.constantFrom('NaN', 'Infinity', '-Infinity', 'say "NaN"', '\\', '\u2028', '{"ts": 1}'));
const validRecord = fc
  .record({
    ts: fc.double({ min: 0, max: 4e9, noNaN: true }),
    rank: fc.integer({ min: 0, max: 4096 }),
    step: fc.integer({ min: 0, max: 2 ** 40 }),
    msg: fc.constantFrom('progress', 'beat', 'boot', 'step_end', 'watchdog_dump', 'fineweb_loader_ready', 'weird_new_kind'),
    loss: num,
    toks_per_s: num,
    grad_norm: num,
    dt_fetch_s: num,
    note: str,
    nested: fc.jsonValue({ maxDepth: 3 }),
  })
  .map((r): Gen => ({ bytes: Buffer.from(pyJson(r) + (r.rank % 7 === 0 ? '\r' : '')), valid: true }));
const truncated = validRecord.chain((g) => fc.integer({ min: 1, max: Math.max(1, g.bytes.length - 2) }).map((n): Gen => ({ bytes: g.bytes.subarray(0, n), valid: false })));
const garbage = fc.uint8Array({ minLength: 1, maxLength: 200 }).map((a): Gen => ({ bytes: Buffer.from(a.filter((b) => b !== 10)), valid: false }));
const deep = fc.integer({ min: 1, max: 20000 }).map((n): Gen => ({ bytes: Buffer.from(`{"ts": 1, "rank": 0, "step": 1, "msg": "x", "d": ${'['.repeat(n)}${']'.repeat(n)}}`), valid: true }));
const hugeNumber = fc.integer({ min: 300, max: 5000 }).map((n): Gen => ({ bytes: Buffer.from(`{"ts": 1${'0'.repeat(n)}, "rank": 0, "step": 1}`), valid: false }));
const badUtf8 = validRecord.map((g): Gen => ({ bytes: Buffer.concat([g.bytes.subarray(0, g.bytes.length - 1), Buffer.from([0xc3, 0x28]), g.bytes.subarray(g.bytes.length - 1)]), valid: false }));
const missing = fc.constantFrom('{"rank": 0, "step": 1}', '{"ts": 1, "step": 1}', '{"ts": NaN, "rank": 0, "step": 1}', '[NaN]', 'NaN', '"NaN"', '{}', 'null').map((s): Gen => ({ bytes: Buffer.from(s), valid: false }));
const line = fc.oneof({ weight: 10, arbitrary: validRecord }, { weight: 2, arbitrary: truncated }, { weight: 2, arbitrary: garbage }, { weight: 1, arbitrary: deep }, { weight: 1, arbitrary: hugeNumber }, { weight: 2, arbitrary: badUtf8 }, { weight: 2, arbitrary: missing });

test(`${BATCHES * PER_BATCH} generated lines: no throw, every line a record or a counted error, every valid record read`, { timeout: 600_000 }, () => {
  const stats = new Stats();
  const ranks = new Map<number, RankState>();
  const table: RankTable = { ranks, touched: () => undefined };
  const sink = new HeartbeatSink(table, { gateEntropyMin: 0.2, gateMaxThreshold: 0.9, gateCollapseFrac: 0.5, fetchStallRatio: 3, fetchWarmupN: 10 }, stats);
  let lines = 0;
  let valid = 0;
  let records = 0;
  fc.assert(
    fc.property(fc.array(line, { minLength: PER_BATCH, maxLength: PER_BATCH }), (batch) => {
      const before = countRecords(ranks);
      const errorsBefore = totalErrors(stats);
      let validHere = 0;
      for (const g of batch) {
        const buf = Buffer.concat([Buffer.from('xx'), g.bytes, Buffer.from('\n')]);
        sink.line(buf, 2, buf.length - 1);
        if (g.valid) validHere++;
      }
      const got = countRecords(ranks) - before;
      const errs = totalErrors(stats) - errorsBefore;
      lines += batch.length;
      valid += validHere;
      records += got;
      // Every line is accounted for exactly once; a line meant to be valid is never an error.
      assert.equal(batch.length, got + errs);
      assert.equal(true, got >= validHere, `only ${got} records from ${validHere} valid lines`);
    }),
    { numRuns: BATCHES, seed: Number(process.env.FUZZ_SEED ?? 4242) },
  );
  assert.equal(BATCHES * PER_BATCH, lines);
  assert.equal(lines, stats.linesRead);
  assert.equal(true, valid > lines / 2);
  assert.equal(true, records >= valid);
  for (const s of ranks.values()) assert.equal(true, s.toksHistory.length <= 40);
});

function countRecords(ranks: Map<number, RankState>): number {
  let n = 0;
  for (const s of ranks.values()) for (const v of Object.values(s.records)) n += v;
  return n;
}
function totalErrors(stats: Stats): number {
  return PARSE_ERROR_REASONS.reduce((n, r) => n + stats.parseErrors[r], 0);
}
