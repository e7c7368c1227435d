// Discovery against hostile run roots: out of file descriptors, names that are not UTF-8.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { DiscoveryCache, discoverRuns, escapeName, RunNameNotUtf8 } from '../../src/source/discover.js';
import { tmpDir } from '../helpers/proc.js';

const DISCOVER = new URL('../../src/source/discover.js', import.meta.url).href;

/** Runs `body` (an ES module's text) in a node whose open-files limit is 64; returns its stdout as JSON. */
function underFdLimit(body: string): unknown {
  const r = spawnSync('sh', ['-c', 'ulimit -n 64 && exec "$0" --input-type=module -e "$1"', process.execPath, body], { encoding: 'utf8' });
  assert.equal(0, r.status, r.stderr);
  return JSON.parse(r.stdout);
}

test('emfile_during_discovery: out of descriptors throws DiscoveryRetry (never an empty root, which would drop every run); with descriptors back the runs are found', () => {
  const d = tmpDir('tw-disc-');
  try {
    for (const run of ['r1', 'r2']) {
      mkdirSync(join(d.path, run));
      writeFileSync(join(d.path, run, 'heartbeat_rank0.jsonl'), '');
    }
    const out = underFdLimit(`
      import { openSync, closeSync } from 'node:fs';
      import { discoverRuns, listRunFilesSync, listRunFiles, DiscoveryRetry } from '${DISCOVER}';
      const root = ${JSON.stringify(d.path)};
      const held = [];
      try { for (;;) held.push(openSync('/dev/null', 'r')); } catch (e) { if (e.code !== 'EMFILE') throw e; }
      const what = async (f) => { try { return JSON.stringify(await f()); } catch (e) { return (e instanceof DiscoveryRetry ? 'retry:' : 'error:') + e.code; } };
      const exhausted = {
        discover: await what(() => discoverRuns([], [root], () => {})),
        listSync: await what(() => listRunFilesSync(root + '/r1')),
        listAsync: await what(() => listRunFiles(root + '/r1')),
      };
      for (const fd of held) closeSync(fd);
      const runs = (await discoverRuns([], [root], () => {})).map((l) => l.name).sort();
      console.log(JSON.stringify({ exhausted, runs }));
    `) as { exhausted: Record<string, string>; runs: string[] };
    assert.deepEqual({ discover: 'retry:EMFILE', listSync: 'retry:EMFILE', listAsync: 'retry:EMFILE' }, out.exhausted);
    assert.deepEqual(['r1', 'r2'], out.runs);
  } finally {
    d.cleanup();
  }
});

test('run_dir_name_not_utf8: refused with a reason that shows the name escaped and names the fix; the other runs are discovered, at every discovery', async () => {
  const d = tmpDir('tw-disc-');
  try {
    mkdirSync(join(d.path, 'ok'));
    mkdirSync(Buffer.concat([Buffer.from(d.path + '/run-'), Buffer.from([0xff, 0xfe]), Buffer.from('%x')]));
    const cache = new DiscoveryCache();
    for (let pass = 0; pass < 2; pass++) {
      const errors: Array<[string, Error]> = [];
      const runs = await discoverRuns([], [d.path], (p, e) => errors.push([p, e]), cache);
      assert.deepEqual(
        ['ok'],
        runs.map((r) => r.name),
      );
      assert.equal(1, errors.length);
      assert.equal(join(d.path, 'run-%FF%FE%25x'), errors[0][0]);
      assert.equal(true, errors[0][1] instanceof RunNameNotUtf8);
      assert.match(errors[0][1].message, /not valid UTF-8 \(shown escaped: run-%FF%FE%25x\).*Fix: rename it/);
    }
  } finally {
    d.cleanup();
  }
});

test('escapeName is lossless: every byte string maps to a distinct printable name', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 12 }), fc.uint8Array({ maxLength: 12 }), (a, b) => {
      const [x, y] = [escapeName(Buffer.from(a)), escapeName(Buffer.from(b))];
      assert.equal(Buffer.from(a).equals(Buffer.from(b)), x === y);
      assert.match(x, /^[\x20-\x7e]*$/);
    }),
  );
});
