// Property-based fuzz of line → record → state: 200,000 generated lines per run through the
// real HeartbeatSink (bytes in, as a tail delivers them). Nothing may throw; every well-formed
// record (NaN/Infinity tokens included) is read; a record glued onto a writer's unfinished line
// is salvaged. The invariant the code keeps (src/parse/line.ts): each line has exactly one
// outcome, a record, a counted error, or a counted invalid_json plus the record salvaged from
// it, so records + errors = lines + salvaged lines, never more, never less.
//
// The seed varies from run to run and is printed; TRAINWATCH_FUZZ_SEED=<seed> replays one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import fc from 'fast-check';
import { PARSE_ERROR_REASONS, parseHeartbeatLine, type LineOutcome } from '../../src/parse/line.js';
import type { RankState } from '../../src/state/rank.js';
import { HeartbeatSink, type RankTable } from '../../src/watch/sinks.js';
import { Stats } from '../../src/watch/stats.js';
import { pyJson } from '../helpers/proc.js';

// A different seed every run: runs add up to more cases than one long run with a fixed seed did.
const BATCHES = 200;
const PER_BATCH = 1000;

/** What a generated line must become: a record, a salvaged record, never a plain record, or anything. */
type Expect = 'record' | 'salvage' | 'error' | 'any';
type Gen = { bytes: Buffer; expect: Expect; rank?: number; step?: number };

const num = fc.oneof(fc.double(), fc.constantFrom(NaN, Infinity, -Infinity, 1e308, -1e308, 5e-324, 0, -0), fc.integer());
const str = fc.oneof(fc.string(), fc.constantFrom('NaN', 'Infinity', '-Infinity', 'say "NaN"', '\\', '\u2028', '{"ts": 1}'));
const fields = {
  ts: fc.double({ min: 0, max: 4e9, noNaN: true }),
  rank: fc.integer({ min: 0, max: 4096 }),
  step: fc.integer({ min: 0, max: 2 ** 40 }),
  msg: fc.constantFrom('progress', 'beat', 'boot', 'step_end', 'watchdog_dump', 'fineweb_loader_ready', 'weird_new_kind'),
  loss: num,
  toks_per_s: num,
  grad_norm: num,
  dt_fetch_s: num,
  note: str,
};
const toGen = (r: { rank: number; step: number }): Gen => ({
  bytes: Buffer.from(pyJson(r) + (r.rank % 7 === 0 ? '\r' : '')),
  expect: 'record',
  rank: r.rank,
  step: r.step,
});
const validRecord = fc.record({ ...fields, nested: fc.jsonValue({ maxDepth: 3 }) }).map(toGen);
// Without nested objects, and no "{" in its string: the record's only '{"' is then its first.
// (Salvage starts at the line's last '{"', so a string value ending in "{" defeats it: a known
// limit of the heuristic, not fuzzed here.)
const flatRecord = fc.record({ ...fields, note: str.map((x) => x.replaceAll('{', '(')) }).map(toGen);
const truncated = validRecord.chain((g) =>
  fc.integer({ min: 1, max: Math.max(1, g.bytes.length - 2) }).map((n): Gen => ({ bytes: g.bytes.subarray(0, n), expect: 'error' })),
);
// A writer killed mid-line, then the next record appended onto its fragment: the record is salvaged.
// A fragment cut inside a UTF-8 sequence makes the whole line invalid_utf8, which is never
// salvaged (src/parse/line.ts checks the encoding first): that record is lost.
const glued = fc
  .tuple(truncated, flatRecord)
  .map(([frag, g]): Gen => ({ ...g, bytes: Buffer.concat([frag.bytes, g.bytes]), expect: isUtf8(frag.bytes) ? 'salvage' : 'error' }));
const garbage = fc.uint8Array({ minLength: 1, maxLength: 200 }).map((a): Gen => ({ bytes: Buffer.from(a.filter((b) => b !== 10)), expect: 'any' }));
const deep = fc.integer({ min: 1, max: 20000 }).map((n): Gen => ({
  bytes: Buffer.from(`{"ts": 1, "rank": 0, "step": 1, "msg": "x", "d": ${'['.repeat(n)}${']'.repeat(n)}}`),
  expect: 'record',
  rank: 0,
  step: 1,
}));
// 1e300 is a finite ts (a record), 1e309 is not (bad_field_type).
const hugeNumber = fc
  .integer({ min: 300, max: 5000 })
  .map((n): Gen => ({ bytes: Buffer.from(`{"ts": 1${'0'.repeat(n)}, "rank": 0, "step": 1}`), expect: 'any' }));
const badUtf8 = validRecord.map((g): Gen => ({
  bytes: Buffer.concat([g.bytes.subarray(0, g.bytes.length - 1), Buffer.from([0xc3, 0x28]), g.bytes.subarray(g.bytes.length - 1)]),
  expect: 'error',
}));
const missing = fc
  .constantFrom('{"rank": 0, "step": 1}', '{"ts": 1, "step": 1}', '{"ts": NaN, "rank": 0, "step": 1}', '[NaN]', 'NaN', '"NaN"', '{}', 'null')
  .map((s): Gen => ({ bytes: Buffer.from(s), expect: 'error' }));
const line = fc.oneof(
  { weight: 10, arbitrary: validRecord },
  { weight: 2, arbitrary: truncated },
  { weight: 2, arbitrary: glued },
  { weight: 2, arbitrary: garbage },
  { weight: 1, arbitrary: deep },
  { weight: 1, arbitrary: hugeNumber },
  { weight: 2, arbitrary: badUtf8 },
  { weight: 2, arbitrary: missing },
);

/** Checks one line's outcome against what its generator meant; returns [records, errors] it adds. */
function check(g: Gen, o: LineOutcome): [number, number] {
  // The message is built only on failure: this runs for every line.
  const fail = () => assert.fail(`${g.expect} line ${JSON.stringify(g.bytes.toString('latin1').slice(0, 300))} gave ${JSON.stringify(o)?.slice(0, 300)}`);
  if (typeof o === 'string') {
    if (g.expect !== 'error' && g.expect !== 'any') fail();
    return [0, 1];
  }
  if (Array.isArray(o)) {
    const [reason, r] = o as readonly [string, { rank: number; step: number }];
    // Salvage follows invalid JSON only; an error line may hold a salvageable nested object.
    if (reason !== 'invalid_json' || g.expect === 'record') fail();
    if (g.expect === 'salvage' && (r.rank !== g.rank || r.step !== g.step)) fail();
    return [1, 1];
  }
  const r = o as { rank: number; step: number };
  if (g.expect !== 'record' && g.expect !== 'any') fail();
  if (g.expect === 'record' && (r.rank !== g.rank || r.step !== g.step)) fail();
  return [1, 0];
}

const SEED = Number(process.env.TRAINWATCH_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));

test(
  `${BATCHES * PER_BATCH} generated lines: no throw, each line one outcome (records + errors = lines + salvaged), every valid and every glued record read`,
  { timeout: 3_600_000 },
  (t) => {
    t.diagnostic(`seed ${SEED}; replay with TRAINWATCH_FUZZ_SEED=${SEED} npm test -- parser-fuzz`);
    const stats = new Stats();
    const ranks = new Map<number, RankState>();
    const params = { gateEntropyMin: 0.2, gateMaxThreshold: 0.9, gateCollapseFrac: 0.5, fetchStallRatio: 3, fetchWarmupN: 10 };
    const table: RankTable = { ranks, touched: () => undefined, params };
    const sink = new HeartbeatSink(table, stats);
    let lines = 0;
    let valid = 0;
    let salvaged = 0;
    let records = 0;
    try {
      fc.assert(
        fc.property(fc.array(line, { minLength: PER_BATCH, maxLength: PER_BATCH }), (batch) => {
          const before = countRecords(ranks);
          const errorsBefore = totalErrors(stats);
          let wantRecords = 0;
          let wantErrors = 0;
          for (const g of batch) {
            const buf = Buffer.concat([Buffer.from('xx'), g.bytes, Buffer.from('\n')]);
            // What the pure parser makes of the line, checked against what the generator meant...
            const [r, e] = check(g, parseHeartbeatLine(buf, 2, buf.length - 1));
            wantRecords += r;
            wantErrors += e;
            if (r && e) salvaged++;
            // ...and the sink, fed the same bytes, counts exactly that.
            sink.line(buf, 2, buf.length - 1);
            if (g.expect === 'record') valid++;
          }
          const got = countRecords(ranks) - before;
          const errs = totalErrors(stats) - errorsBefore;
          lines += batch.length;
          records += got;
          assert.deepEqual([wantRecords, wantErrors], [got, errs], "records and errors the sink counted vs. the lines' outcomes");
        }),
        { numRuns: BATCHES, seed: SEED },
      );
    } catch (e) {
      // fast-check keeps the failing assertion in `cause`.
      const cause = (e as Error).cause as Error | undefined;
      throw new Error(
        `fuzz failed with seed ${SEED}; replay with TRAINWATCH_FUZZ_SEED=${SEED} npm test -- parser-fuzz\n${cause?.message ?? ''}\n${(e as Error).message.slice(0, 2000)}`,
      );
    }
    assert.equal(BATCHES * PER_BATCH, lines);
    assert.equal(lines, stats.linesRead);
    assert.equal(lines + salvaged, records + totalErrors(stats), 'records + errors = lines + salvaged lines');
    // About half the generated lines are valid records (by weight); a quarter is the floor that says the generator still makes them.
    assert.equal(true, valid > lines / 4, `only ${valid} of ${lines} lines were valid records`);
    assert.equal(true, salvaged >= lines / 20, `only ${salvaged} salvaged lines: the glued generator is not reaching salvage`);
    for (const s of ranks.values()) assert.equal(true, s.toksHistory.length <= 40);
  },
);

function countRecords(ranks: Map<number, RankState>): number {
  let n = 0;
  for (const s of ranks.values()) for (const v of Object.values(s.records)) n += v;
  return n;
}
function totalErrors(stats: Stats): number {
  return PARSE_ERROR_REASONS.reduce((n, r) => n + stats.parseErrors[r], 0);
}
