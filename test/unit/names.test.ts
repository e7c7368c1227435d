import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nameApart } from '../../src/source/names.js';

const loc = (dir: string) => ({ name: dir.split('/').at(-1)!, dir });

test('two runs with the same base name are labelled by their parent directories, in any discovery order', () => {
  const a = loc('/data/a/run');
  const b = loc('/data/b/run');
  const c = loc('/data/x/other');
  for (const order of [
    [a, b, c],
    [c, b, a],
  ]) {
    const names = nameApart(order);
    assert.deepEqual(['a/run', 'b/run', 'other'], [names.get(a), names.get(b), names.get(c)]);
  }
});

test('names that still tie at every depth fall back to the full path', () => {
  const a = loc('/x/run');
  const b = loc('/y/x/run');
  const names = nameApart([a, b]);
  assert.notEqual(names.get(a), names.get(b));
});
