// Reliability of the real trainwatch process as files and run directories come and go:
// descriptors are released, series follow the directories, churn leaves no descriptors or
// tails behind, and symlink loops under --root are harmless. (What churn and loops cost in CPU
// is measured in bench/, not asserted here.)
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readlinkSync, readdirSync, rmSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scrape, waitFor } from '../helpers/proc.js';
import {
  assertServing,
  beat,
  cpuSeconds,
  killAtEnd,
  fdTargets,
  nonZeroParseErrors,
  records,
  scrapeUntil,
  sleep,
  startTw,
  startWriter,
  step,
  scratch,
  sweepsPassed,
  SWEEP_SENTINEL,
} from '../helpers/reliability.js';

describe('lifecycle', { concurrency: 4 }, () => {
  test('deleted_but_open_file: trainwatch releases its descriptor after reading what was left', { timeout: 60_000 }, async (t) => {
    const base = scratch(t);
    const run = join(base, 'del');
    mkdirSync(run);
    const f = join(run, 'heartbeat_rank0.jsonl');
    for (let i = 1; i <= 5; i++) beat(run, 0, i);
    // Another process keeps the file open, so the inode outlives its name: only trainwatch's own
    // descriptor is in question.
    const holder = spawn('python3', ['-c', 'import sys, time\nf = open(sys.argv[1], "a")\nprint("open", flush=True)\ntime.sleep(120)', f], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    killAtEnd(t, holder);
    await new Promise((r) => holder.stdout.once('data', r));
    const tw = await startTw(t, ['--dir', run, '--tail.sweep-interval-s', '0.5']);
    await scrapeUntil(tw.url, (m) => records(m, 'del', 0) === 5, '5 records');
    assert.equal(1, fdTargets(tw.pid).filter((p) => p === f).length, 'trainwatch holds the file open');
    for (let i = 6; i <= 8; i++) beat(run, 0, i);
    rmSync(f);
    assert.equal(
      true,
      fdTargets(holder.pid!).some((p) => p === `${f} (deleted)`),
      'the inode is still alive',
    );
    // Read for a 1 s grace after the delete (a late writer), then released at the next poll.
    await waitFor(() => !fdTargets(tw.pid).some((p) => p.startsWith(f)), 'trainwatch to release the deleted file', 60_000);
    let m = await scrapeUntil(tw.url, (m) => records(m, 'del', 0) === 8, 'the 3 records appended just before the delete');
    // The trainer's next append creates a new file at the path.
    beat(run, 0, 9);
    m = await scrapeUntil(tw.url, (m) => records(m, 'del', 0) === 9, 'the record of the new file');
    assert.equal(9, step(m, 'del', 0));
    assert.equal(1, m.get('trainwatch_files_open'));
    assert.deepEqual({}, nonZeroParseErrors(m));
    await assertServing(tw);
  });

  test('run_directory_deleted_and_recreated: series disappear, then come back counting from the new files', { timeout: 60_000 }, async (t) => {
    const base = scratch(t);
    const run = join(base, 'r1');
    const fill = (n: number, from: number, ranks = [0, 1]) => {
      mkdirSync(run, { recursive: true });
      for (let i = 0; i < n; i++) for (const r of ranks) beat(run, r, from + i);
    };
    fill(10, 1);
    const tw = await startTw(t, ['--root', base, '--tail.sweep-interval-s', '0.2']);
    await scrapeUntil(tw.url, (m) => records(m, 'r1', 0) === 10 && records(m, 'r1', 1) === 10, '10 records per rank');
    rmSync(run, { recursive: true });
    let m = await scrapeUntil(tw.url, (m) => !m.has('trainwatch_step{run="r1",rank="0"}') && m.get('trainwatch_runs_watched') === 0, 'the series to disappear');
    assert.equal(undefined, m.get('trainwatch_run_ranks{run="r1"}'));
    assert.deepEqual(
      [],
      fdTargets(tw.pid).filter((p) => p.startsWith(run)),
      'no descriptor left in the deleted run',
    );
    // Re-created: a new run, counted from its new files only; rank 1 has no file yet.
    // (Not written then deleted: trainwatch may read a file in between, and then it is a rank.)
    fill(3, 100, [0]);
    m = await scrapeUntil(tw.url, (m) => records(m, 'r1', 0) === 3, 'the re-created run');
    assert.equal(102, step(m, 'r1', 0));
    assert.equal(undefined, step(m, 'r1', 1));
    // Live appends in the re-created directory are followed.
    beat(run, 0, 103);
    beat(run, 1, 103);
    m = await scrapeUntil(tw.url, (m) => records(m, 'r1', 0) === 4 && records(m, 'r1', 1) === 1, 'appends in the re-created run');
    // Deleted and re-created at once, faster than a sweep: either the run is a new instance
    // (counts restart from the new files) or, when the new directory got the old one's inode
    // number back, the same one (its tails see new files and add them). The old instance may
    // read the new files for a moment before discovery sees the new inode and replaces it: the
    // counters then reset, as a new instance's do. Never anything else, and never a record twice.
    rmSync(run, { recursive: true });
    fill(2, 200);
    // Sentinels after everything else: once they are counted, no earlier record can be counted again.
    beat(run, 0, 202);
    beat(run, 1, 202);
    m = await scrapeUntil(tw.url, (m) => step(m, 'r1', 0) === 202 && step(m, 'r1', 1) === 202, 'the sentinels after the quick re-creation');
    const counts = JSON.stringify([records(m, 'r1', 0), records(m, 'r1', 1)]);
    t.diagnostic(counts === '[3,3]' ? 'the quick re-creation was seen as a new run' : 'the quick re-creation was seen as new files of the same run');
    assert.equal(true, ['[3,3]', '[7,4]'].includes(counts), `records of ranks 0 and 1: ${counts}, expected [3,3] (a new instance) or [7,4] (the same one)`);
    assert.deepEqual({}, nonZeroParseErrors(m));
    await assertServing(tw);
  });

  test(
    'expired_run: a run idle past run.ttl-s has no series and holds no descriptor, is still polled, and only its deletion counts in runs_expired_total',
    { timeout: 60_000 },
    async (t) => {
      const base = scratch(t);
      const run = join(base, 'old');
      mkdirSync(run);
      // Written 7 hours ago (run.ttl-s is 6 h), file times included.
      const then = Date.now() / 1000 - 7 * 3600;
      for (let i = 1; i <= 3; i++) beat(run, 0, i, 'progress', { ts: then });
      utimesSync(join(run, 'heartbeat_rank0.jsonl'), then, then);
      const tw = await startTw(t, ['--root', base, '--tail.sweep-interval-s', '0.2']);
      const state = async () => ((await (await fetch(`${tw.url}/api/status`)).json()) as { runs: { run: string; state: string }[] }).runs;
      await waitFor(async () => (await state()).some((r) => r.run === 'old' && r.state === 'expired'), 'the run to be listed as expired');
      let m = await scrape(tw.url);
      assert.equal(undefined, step(m, 'old', 0), 'an expired run has no series');
      assert.equal(0, m.get('trainwatch_runs_watched'));
      assert.equal(0, m.get('trainwatch_files_open'));
      assert.deepEqual(
        [],
        fdTargets(tw.pid).filter((p) => p.startsWith(run)),
        'an expired run holds no descriptor',
      );
      assert.equal(0, m.get('trainwatch_runs_expired_total'), 'expiry alone is not counted');
      // Still polled: a new record brings it back.
      beat(run, 0, 4);
      m = await scrapeUntil(tw.url, (m) => step(m, 'old', 0) === 4, 'the run to come back with its new record');
      assert.equal(1, m.get('trainwatch_runs_watched'));
      // Its directory goes away: dropped, and counted.
      rmSync(run, { recursive: true });
      m = await scrapeUntil(tw.url, (m) => m.get('trainwatch_runs_expired_total') === 1, 'the deleted run to be counted');
      assert.equal(0, m.get('trainwatch_runs_watched'));
      await assertServing(tw);
    },
  );

  test(
    'file_churn: heartbeat files created and deleted at ~1,000 a minute, descriptors and tails back to the baseline, every record counted once',
    { timeout: 180_000 },
    async (t) => {
      const base = scratch(t);
      const churn = join(base, 'churn');
      const steady = join(base, 'steady');
      mkdirSync(churn);
      mkdirSync(steady);
      beat(steady, 0, 0, 'boot');
      const tw = await startTw(t, ['--root', base, '--tail.sweep-interval-s', '0.5', '--watch.crash-detect', '1']);
      await scrapeUntil(tw.url, (m) => records(m, 'steady', 0, 'boot') === 1, 'the steady run');
      const writer = startWriter(t, join(steady, 'heartbeat_rank0.jsonl'), 0, 1, 100_000, 20);
      await scrapeUntil(tw.url, (m) => records(m, 'steady', 0) >= 5, 'the steady writer to be running');
      const fds0 = fdTargets(tw.pid).length;
      const watched0 = (await scrape(tw.url)).get('trainwatch_files_watched')!;
      const cpu0 = cpuSeconds(tw.pid);
      const t0 = Date.now();
      // 330 heartbeat files at 1,000 a minute (when the machine keeps up): each gets a record when
      // created, another half a second later, and is deleted about 1.5 s after its birth (~25
      // exist at any moment), but never before trainwatch counted its two records: a file deleted
      // unread is lost to any tailer, so that would test the machine's load, not trainwatch. A
      // few stack dumps come and go too.
      const FILES = 330;
      const EVERY = 60;
      const live: { rank: number; born: number; second: boolean }[] = [];
      let created = 0;
      let deleted = 0;
      const deleteRead = async (due: (f: (typeof live)[number]) => boolean) => {
        const gone = live.filter(due);
        if (gone.length === 0) return;
        await scrapeUntil(
          tw.url,
          (m) => gone.every((f) => records(m, 'churn', f.rank) === 2),
          `ranks ${gone.map((f) => f.rank).join(' ')} counted before their deletion`,
          60_000,
        );
        for (const f of gone) {
          live.splice(live.indexOf(f), 1);
          unlinkSync(join(churn, `heartbeat_rank${f.rank}.jsonl`));
          deleted++;
        }
      };
      for (let tick = 0; created < FILES; tick++) {
        const tickAt = Date.now();
        const rank = 1000 + created++;
        beat(churn, rank, 1);
        live.push({ rank, born: tickAt, second: false });
        for (const f of live) {
          if (!f.second && tickAt - f.born >= 500) {
            beat(churn, f.rank, 2);
            f.second = true;
          }
        }
        await deleteRead((f) => f.second && tickAt - f.born >= 1500);
        if (tick % 10 === 0) {
          writeFileSync(join(churn, `stackdump_${tick}.txt`), 'Thread 0x1\n');
          if (tick >= 10) unlinkSync(join(churn, `stackdump_${tick - 10}.txt`));
        }
        await sleep(Math.max(0, tickAt + EVERY - Date.now())); // pacing only; nothing is asserted about time
      }
      const elapsed = (Date.now() - t0) / 1000;
      for (const f of live) {
        if (!f.second) beat(churn, f.rank, 2);
        f.second = true;
      }
      await deleteRead(() => true);
      // force: trainwatch may be renaming a control file of the run (its trainer_crash) meanwhile.
      for (const n of readdirSync(churn)) rmSync(join(churn, n), { force: true });
      t.diagnostic(
        `${created} heartbeat files created and ${deleted} deleted in ${elapsed.toFixed(1)} s (${Math.round((created / elapsed) * 60)}/min); trainwatch CPU ${(((cpuSeconds(tw.pid) - cpu0) / elapsed) * 100).toFixed(1)}% of a core (bench/ measures this)`,
      );
      assert.equal(FILES, deleted);
      // Every churned file's two records, exactly once: a sentinel in the steady run is no help
      // for other files, so the counts are checked once every file is gone and swept.
      await sweepsPassed(tw.url, base, 2);
      const m = await scrape(tw.url);
      const wrong = [];
      for (let r = 1000; r < 1000 + created; r++) if (records(m, 'churn', r) !== 2 || step(m, 'churn', r) !== 2) wrong.push(r);
      assert.deepEqual([], wrong, 'ranks whose records were not counted exactly twice');
      // Descriptors and tails back to where they were (the sentinel run adds one file).
      await waitFor(() => fdTargets(tw.pid).length <= fds0 + 3, `fds back near the baseline of ${fds0}`, 60_000).catch((e) => {
        throw new Error(`${(e as Error).message}; now ${fdTargets(tw.pid).length}: ${fdTargets(tw.pid).join(' ')}`);
      });
      await scrapeUntil(tw.url, (m) => m.get('trainwatch_files_watched')! <= watched0 + 1, 'files_watched back to the baseline', 60_000);
      const n = await writer.stop();
      const m2 = await scrapeUntil(tw.url, (m) => records(m, 'steady', 0) === n, `the steady run's ${n} records`);
      assert.equal(n, step(m2, 'steady', 0));
      assert.deepEqual({}, nonZeroParseErrors(m2));
      await assertServing(tw);
    },
  );

  test('symlink_loop_in_run_root: no crash, one warning per loop, the real runs still discovered', { timeout: 60_000 }, async (t) => {
    const base = scratch(t);
    const real = join(base, 'real');
    mkdirSync(real);
    for (let i = 1; i <= 5; i++) beat(real, 0, i);
    symlinkSync(base, join(base, 'a')); // root/a -> root
    symlinkSync(join(base, 'b'), join(base, 'b')); // root/b -> root/b (ELOOP)
    symlinkSync('c2', join(base, 'c1')); // root/c1 -> c2 -> c1
    symlinkSync('c1', join(base, 'c2'));
    symlinkSync(real, join(base, 'same')); // a second name for a real run
    mkdirSync(join(real, 'tb'));
    symlinkSync(real, join(real, 'tb', 'up')); // a loop inside a run directory
    for (const poll of [false, true]) {
      const tw = await startTw(t, ['--root', base, '--tail.sweep-interval-s', '0.2', '--watch.crash-detect', '1', ...(poll ? ['--poll'] : [])]);
      await scrapeUntil(tw.url, (m) => records(m, 'real', 0) + records(m, 'same', 0) === 5, `the real run${poll ? ' (polling)' : ''}`);
      // A run that appears later is still discovered.
      const late = join(base, `late${poll ? 'p' : ''}`);
      mkdirSync(late);
      beat(late, 0, 1);
      await scrapeUntil(tw.url, (m) => records(m, `late${poll ? 'p' : ''}`, 0) === 1, 'a run created later');
      await sweepsPassed(tw.url, base, 3);
      const m = await scrape(tw.url);
      // Each directory is one run, whatever its names: the loops are not runs.
      assert.deepEqual(
        [`late${poll ? 'p' : ''}`, 'real'],
        [...m.keys()]
          .filter((k) => k.startsWith('trainwatch_run_ranks{'))
          .map((k) => /run="([^"]+)"/.exec(k)![1])
          .filter((r) => r !== SWEEP_SENTINEL)
          .map((r) => (r === 'same' ? 'real' : r))
          .sort(),
      );
      assert.equal(5, records(m, 'real', 0) + records(m, 'same', 0));
      // A loop is worth one warning, not one per sweep (several sweeps went by).
      const warnings = tw
        .logs()
        .split('\n')
        .filter((l) => /level=warn/.test(l) && !l.includes(`run=${SWEEP_SENTINEL}`) && !/run=(real|same|late)/.test(l));
      const paths = warnings.map((l) => /path=(\S+)/.exec(l)?.[1]);
      assert.deepEqual(
        ['a', 'b', 'c1', 'c2'].map((n) => join(base, n)),
        paths.sort(),
        `warnings:\n${warnings.join('\n')}`,
      );
      await assertServing(tw);
      await tw.stop();
      rmSync(late, { recursive: true });
      rmSync(join(base, SWEEP_SENTINEL), { recursive: true });
      assert.equal(true, existsSync(join(base, 'a')) && readlinkSync(join(base, 'a')) === base);
    }
  });
});
