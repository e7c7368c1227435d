// Discovery against hostile run roots: out of file descriptors, names that are not UTF-8.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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

