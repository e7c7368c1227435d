// Reliability of the real trainwatch process when the system says no: a heartbeat file it may
// not read (trainwatch runs without capabilities, since CAP_DAC_OVERRIDE reads anything; its
// uid stays the test's, so it can reach a checkout wherever it was cloned, a 0700 directory
// included), and inotify watches exhausted (a user namespace with a tiny max_inotify_watches;
// never the host's limit).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { requireBinary, scrape } from '../helpers/proc.js';
import {
  assertServing,
  beat,
  nonZeroParseErrors,
  parseErrors,
  record,
  records,
  scratch,
  scrapeUntil,
  startTw,
  step,
  sweepsPassed,
} from '../helpers/reliability.js';

// No capabilities, now or after exec: mode bits then bind even a root-owned process, whose
// owner bits of 000 deny it like anyone else's. Same uid, so the checkout stays reachable.
const NO_CAPS = ['--inh-caps=-all', '--bounding-set=-all'];

describe('privileges and kernel limits', { concurrency: 2 }, () => {
  test(
    'permission_denied_file: counted as read_error and logged once, the other ranks keep working, the process keeps serving',
    { timeout: 60_000 },
    async (t) => {
      const setpriv = requireBinary('setpriv', 'util-linux');
      const base = scratch(t);
      const run = join(base, 'perm');
      mkdirSync(run);
      const five = (rank: number) => Array.from({ length: 5 }, (_, i) => record(rank, i + 1)).join('');
      for (const r of [0, 1, 2]) writeFileSync(join(run, `heartbeat_rank${r}.jsonl`), five(r));
      chmodSync(join(run, 'heartbeat_rank1.jsonl'), 0o000);
      // A run directory it may not list either (000: the owner may not list it without capabilities).
      const locked = join(base, 'locked');
      mkdirSync(locked);
      writeFileSync(join(locked, 'heartbeat_rank0.jsonl'), five(0));
      chmodSync(locked, 0o000);
      const tw = await startTw(t, ['--root', base, '--tail.sweep-interval-s', '0.2', '--watch.crash-detect', '1'], { wrap: [setpriv, ...NO_CAPS] });
      assert.match(readFileSync(`/proc/${tw.pid}/status`, 'utf8'), /^CapEff:\s+0+$/m, 'trainwatch runs without effective capabilities');
      let m = await scrapeUntil(tw.url, (m) => records(m, 'perm', 0) === 5 && records(m, 'perm', 2) === 5, 'the readable ranks');
      assert.equal(undefined, step(m, 'perm', 1));
      assert.equal(1, parseErrors(m, 'read_error'));
      // The other ranks keep flowing while one stays unreadable, for several sweeps.
      for (let i = 6; i <= 10; i++) {
        beat(run, 0, i);
        beat(run, 2, i);
      }
      m = await scrapeUntil(tw.url, (m) => records(m, 'perm', 0) === 10 && records(m, 'perm', 2) === 10, 'the readable ranks, live');
      await sweepsPassed(tw.url, base, 3);
      m = await scrape(tw.url);
      assert.equal(1, parseErrors(m, 'read_error'), 'one count per failure, not one per sweep');
      const logs = tw.logs().split('\n');
      const denied = logs.filter((l) => l.includes('cannot read file') && l.includes('heartbeat_rank1.jsonl'));
      assert.equal(1, denied.length, `one warning for the unreadable file:\n${tw.logs()}`);
      assert.match(denied[0], /EACCES/);
      assert.match(denied[0], new RegExp(`uid ${process.getuid!()}\\b`));
      assert.equal(
        1,
        logs.filter((l) => l.includes('cannot list run directory') && l.includes('run=locked')).length,
        `one warning for the unlistable run:\n${tw.logs()}`,
      );
      await assertServing(tw);
      // Fixed by the operator: the next poll reads it.
      chmodSync(join(run, 'heartbeat_rank1.jsonl'), 0o644);
      m = await scrapeUntil(tw.url, (m) => records(m, 'perm', 1) === 5, 'rank 1 once readable');
      assert.equal(5, step(m, 'perm', 1));
      assert.deepEqual({ read_error: 1 }, nonZeroParseErrors(m));
      await assertServing(tw);
      chmodSync(locked, 0o755); // so that the scratch cleanup can remove it as any user
    },
  );

  test('inotify_watches_exhausted: falls back to polling with the sysctl fix in the log, and still reads new records', { timeout: 60_000 }, async (t) => {
    const unshare = requireBinary('unshare', 'util-linux');
    // inotify watches are counted per user namespace (ucounts, /proc/sys/user/max_inotify_watches),
    // so a new user namespace can have a tiny limit of its own without touching the host's.
    const LIMIT = 2;
    const inNs = (script: string, ...args: string[]) => [
      unshare,
      '--user',
      '--map-root-user',
      'sh',
      '-c',
      `echo ${LIMIT} > /proc/sys/user/max_inotify_watches && ${script}`,
      'ns',
      ...args,
    ];
    const base = scratch(t);
    for (const r of ['a', 'b', 'c']) {
      mkdirSync(join(base, r));
      beat(join(base, r), 0, 1);
    }
    // First make sure the kernel really refuses the third watch in such a namespace.
    const probe = inNs(
      `exec "$@"`,
      process.execPath,
      '-e',
      `const fs = require('fs'); try { for (const d of process.argv.slice(1)) fs.watch(d); console.log('ok'); } catch (e) { console.log(e.code); } process.exit(0);`,
      ...['a', 'b', 'c'].map((r) => join(base, r)),
    );
    const res = spawnSync(probe[0], probe.slice(1), { encoding: 'utf8', timeout: 20_000 });
    assert.equal(
      'ENOSPC',
      res.stdout.trim(),
      `kernel ${release()}: a user namespace with max_inotify_watches=${LIMIT} should refuse a third watch (per-namespace inotify limits); got ${res.stdout}${res.stderr}`,
    );
    const tw = await startTw(t, ['--root', base, '--tail.sweep-interval-s', '1', '--watch.crash-detect', '1'], { wrap: inNs('exec "$@"') });
    const m0 = await scrapeUntil(tw.url, (m) => m.get('trainwatch_watch_polling_fallback') === 1, 'the polling fallback');
    assert.deepEqual(
      [1, 1, 1],
      ['a', 'b', 'c'].map((r) => records(m0, r, 0)),
    );
    const warn = tw
      .logs()
      .split('\n')
      .filter((l) => l.includes('inotify watches exhausted'));
    assert.equal(1, warn.length, tw.logs());
    assert.match(warn[0], /level=warn/);
    assert.match(warn[0], /sysctl fs\.inotify\.max_user_watches=524288/);
    assert.match(warn[0], /ENOSPC/);
    // New records, and a new run, are still picked up.
    for (const r of ['a', 'b', 'c']) beat(join(base, r), 0, 2);
    mkdirSync(join(base, 'd'));
    beat(join(base, 'd'), 0, 7);
    const m = await scrapeUntil(tw.url, (m) => ['a', 'b', 'c'].every((r) => step(m, r, 0) === 2) && step(m, 'd', 0) === 7, 'new records after the fallback');
    assert.deepEqual(
      [2, 2, 2, 1],
      ['a', 'b', 'c', 'd'].map((r) => records(m, r, 0)),
    );
    assert.deepEqual({}, nonZeroParseErrors(m));
    await sweepsPassed(tw.url, base, 2);
    assert.equal(1, (await scrape(tw.url)).get('trainwatch_watch_polling_fallback'), 'the fallback lasts');
    await assertServing(tw);
  });
});
