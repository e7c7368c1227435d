import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseLine, parsePythonJson } from '../../src/parse/line.js';
import { DEFAULT_CSV_LAYOUT, parseCsvLine } from '../../src/parse/csv.js';

const base = '"ts": 1700000000.5, "rank": 3, "step": 42, "msg": "progress"';

test('a plain JSON heartbeat line becomes a record with the fields trainwatch reads', () => {
  const r = parseLine(`{${base}, "loss": 2.5, "toks_per_s": 1000, "extra": {"x": 1}}`);
  assert.ok(r.ok);
  // Absent fields are present as undefined (one object shape for every record); drop them here.
  const present = Object.fromEntries(Object.entries(r.record).filter(([, v]) => v !== undefined));
  assert.deepEqual({ ts: 1700000000.5, rank: 3, step: 42, msg: 'progress', loss: 2.5, toks_per_s: 1000 }, present);
});

const nonFinite: Array<[string, string, number]> = [
  ['bare NaN', 'NaN', NaN],
  ['bare Infinity', 'Infinity', Infinity],
  ['bare -Infinity', '-Infinity', -Infinity],
];
for (const [name, token, value] of nonFinite) {
  test(`Python's ${name} in a number field is read as that number`, () => {
    const r = parseLine(`{${base}, "loss": ${token}, "grad_norm": ${token}}`);
    assert.equal(true, r.ok);
    assert.equal(true, r.ok && Object.is(value, r.record.loss) && Object.is(value, r.record.grad_norm));
  });
}

test('the string "NaN" inside quotes stays a string, even on a line that also has a bare NaN', () => {
  const v = parsePythonJson('{"a": "NaN", "b": NaN, "c": "x Infinity y", "d": "say \\"NaN\\"", "e": [NaN, -Infinity]}') as Record<string, unknown>;
  assert.equal('NaN', v.a);
  assert.equal(true, Number.isNaN(v.b as number));
  assert.equal('x Infinity y', v.c);
  assert.equal('say "NaN"', v.d);
  assert.equal(true, Number.isNaN((v.e as number[])[0]));
  assert.equal(-Infinity, (v.e as number[])[1]);
});

test('identifiers that merely start with NaN or Infinity are not tokens', () => {
  assert.equal(undefined, parsePythonJson('{"a": NaNa}'));
  assert.equal(undefined, parsePythonJson('{"a": Infinity_}'));
});

const errors: Array<[string, string, string]> = [
  ['truncated JSON', `{${base}, "loss": 2.`, 'invalid_json'],
  ['binary garbage', '\u0001\u0002\u00ff{{', 'invalid_json'],
  ['a JSON array', '[1,2,3]', 'not_an_object'],
  ['a JSON number', '42', 'not_an_object'],
  ['a record missing ts', '{"rank": 0, "step": 1, "msg": "beat"}', 'missing_field'],
  ['a record missing rank', '{"ts": 1, "step": 1, "msg": "beat"}', 'missing_field'],
  ['a record missing step', '{"ts": 1, "rank": 0, "msg": "beat"}', 'missing_field'],
  ['a string ts', '{"ts": "now", "rank": 0, "step": 1}', 'bad_field_type'],
  ['a negative rank', '{"ts": 1, "rank": -1, "step": 1}', 'bad_field_type'],
  ['a NaN ts', '{"ts": NaN, "rank": 0, "step": 1}', 'bad_field_type'],
];
for (const [name, line, reason] of errors) {
  test(`${name} is an error with reason ${reason}`, () => {
    assert.deepEqual({ ok: false, reason }, parseLine(line));
  });
}

test('CRLF line endings and a UTF-8 BOM are tolerated', () => {
  const r = parseLine(`\uFEFF{${base}}\r`);
  assert.equal(true, r.ok);
});

test('a huge number and deep nesting do not throw', () => {
  assert.equal(true, parseLine(`{${base}, "loss": 1e400}`).ok);
  const deep = '['.repeat(5000) + ']'.repeat(5000);
  assert.equal(true, parseLine(`{${base}, "x": ${deep}}`).ok);
});

test('training.csv: a header sets the columns, nan is NaN, a row without header uses the default order', () => {
  const h = parseCsvLine('step,loss,lr,toks_per_s', DEFAULT_CSV_LAYOUT);
  assert.equal('header', h.kind);
  const layout = h.kind === 'header' ? h.layout : DEFAULT_CSV_LAYOUT;
  const row = parseCsvLine('10,nan,0.001,0', layout);
  assert.equal('row', row.kind);
  if (row.kind === 'row') {
    assert.equal(10, row.row.step);
    assert.equal(true, Number.isNaN(row.row.loss!));
    assert.equal(0, row.row.toks_per_s);
  }
  const swapped = parseCsvLine('toks_per_s,step,loss', DEFAULT_CSV_LAYOUT);
  assert.deepEqual({ kind: 'header', layout: { step: 1, loss: 2, toks: 0 } }, swapped);
  assert.deepEqual({ kind: 'row', row: { step: 7, loss: 1.5, toks_per_s: 900 } }, parseCsvLine('7,1.5,3e-4,900\r', DEFAULT_CSV_LAYOUT));
  assert.deepEqual({ kind: 'error' }, parseCsvLine('abc,1,2,3', DEFAULT_CSV_LAYOUT));
  assert.deepEqual({ kind: 'blank' }, parseCsvLine('  ', DEFAULT_CSV_LAYOUT));
});
