// Reliability of the real trainwatch process as files and run directories come and go:
// descriptors are released, series follow the directories, churn costs bounded CPU and fds,
// and symlink loops under --root are harmless.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readlinkSync, readdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scrape, waitFor } from '../helpers/proc.js';
import { assertServing, beat, cpuSeconds, killAtEnd, fdTargets, nonZeroParseErrors, records, scrapeUntil, sleep, startTw, startWriter, step, scratch } from '../helpers/reliability.js';

describe('lifecycle', { concurrency: 4 }, () => {
  test('deleted_but_open_file: trainwatch releases its descriptor within a few sweeps, after reading what was left', { timeout: 60_000 }, async (t) => {
    const base = scratch(t);
    const run = join(base, 'del');
    mkdirSync(run);
    const f = join(run, 'heartbeat_rank0.jsonl');
    for (let i = 1; i <= 5; i++) beat(run, 0, i);
    // Another process keeps the file open, so the inode outlives its name: only trainwatch's own
    // descriptor is in question.
    const holder = spawn('python3', ['-c', 'import sys, time\nf = open(sys.argv[1], "a")\nprint("open", flush=True)\ntime.sleep(120)', f], { stdio: ['ignore', 'pipe', 'inherit'] });
    killAtEnd(t, holder);
    await new Promise((r) => holder.stdout!.once('data', r));
    const tw = await startTw(t, ['--dir', run, '--tail.sweep-interval-s', '0.5']);
    await scrapeUntil(tw.url, (m) => records(m, 'del', 0) === 5, '5 records');
    assert.equal(1, fdTargets(tw.pid).filter((p) => p === f).length, 'trainwatch holds the file open');
    for (let i = 6; i <= 8; i++) beat(run, 0, i);
    rmSync(f);
    assert.equal(true, fdTargets(holder.pid!).some((p) => p === `${f} (deleted)`), 'the inode is still alive');
    const t0 = Date.now();
    // Read for a 1 s grace after the delete (a late writer), then released at the next poll: a
    // few sweeps at most.
    await waitFor(() => !fdTargets(tw.pid).some((p) => p.startsWith(f)), 'trainwatch to release the deleted file', 1000 + 500 * 6);
    t.diagnostic(`released ${Date.now() - t0} ms after the delete`);
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
    const fill = (n: number, from: number) => {
      mkdirSync(run, { recursive: true });
      for (let i = 0; i < n; i++) {
        beat(run, 0, from + i);
        beat(run, 1, from + i);
      }
    };
    fill(10, 1);
    const tw = await startTw(t, ['--root', base, '--tail.sweep-interval-s', '0.2']);
    await scrapeUntil(tw.url, (m) => records(m, 'r1', 0) === 10 && records(m, 'r1', 1) === 10, '10 records per rank');
    rmSync(run, { recursive: true });
    let m = await scrapeUntil(tw.url, (m) => !m.has('trainwatch_step{run="r1",rank="0"}') && m.get('trainwatch_runs_watched') === 0, 'the series to disappear');
    assert.equal(undefined, m.get('trainwatch_run_ranks{run="r1"}'));
    assert.deepEqual([], fdTargets(tw.pid).filter((p) => p.startsWith(run)), 'no descriptor left in the deleted run');
    // Re-created: a new run, counted from its new files only; rank 1 has no file yet.
    fill(3, 100);
    unlinkSync(join(run, 'heartbeat_rank1.jsonl'));
    m = await scrapeUntil(tw.url, (m) => records(m, 'r1', 0) === 3, 'the re-created run');
    assert.equal(102, step(m, 'r1', 0));
    assert.equal(undefined, step(m, 'r1', 1));
    // Live appends in the re-created directory are followed.
    beat(run, 0, 103);
    beat(run, 1, 103);
    m = await scrapeUntil(tw.url, (m) => records(m, 'r1', 0) === 4 && records(m, 'r1', 1) === 1, 'appends in the re-created run');
    // Deleted and re-created at once, faster than a sweep: either the run was dropped in between
    // (counts restart from the new files) or it never was (the tails see new files and add
    // them); never anything else, and never a record twice.
    rmSync(run, { recursive: true });
    fill(2, 200);
    m = await scrapeUntil(tw.url, (m) => [2, 6].includes(records(m, 'r1', 0)) && [2, 3].includes(records(m, 'r1', 1)) && step(m, 'r1', 0) === 201, 'the quickly re-created run');
    const dropped = records(m, 'r1', 0) === 2;
    t.diagnostic(dropped ? 'the quick re-creation was seen as a new run' : 'the quick re-creation was seen as new files of the same run');
    assert.equal(dropped ? 2 : 3, records(m, 'r1', 1));
    beat(run, 0, 202);
    m = await scrapeUntil(tw.url, (m) => step(m, 'r1', 0) === 202, 'appends after the quick re-creation');
    await sleep(500);
    m = await scrape(tw.url);
    assert.equal(dropped ? 3 : 7, records(m, 'r1', 0));
    assert.deepEqual({}, nonZeroParseErrors(m));
    await assertServing(tw);
  });

  test('file_churn_1000_per_minute: bounded CPU, descriptors back to the baseline, every record counted once', { timeout: 90_000 }, async (t) => {
    const base = scratch(t);
    const churn = join(base, 'churn');
    const steady = join(base, 'steady');
    mkdirSync(churn);
    mkdirSync(steady);
    beat(steady, 0, 0, 'boot');
    const tw = await startTw(t, ['--root', base, '--tail.sweep-interval-s', '0.5']);
    await scrapeUntil(tw.url, (m) => records(m, 'steady', 0, 'boot') === 1, 'the steady run');
    const writer = startWriter(t, join(steady, 'heartbeat_rank0.jsonl'), 0, 1, 100_000, 20);
    await sleep(1000);
    const fds0 = fdTargets(tw.pid).length;
    const watched0 = (await scrape(tw.url)).get('trainwatch_files_watched')!;
    const cpu0 = cpuSeconds(tw.pid);
    const t0 = Date.now();
    // 1,000 files a minute for 20 s: each heartbeat file gets a record when created, another
    // half a second later, and is deleted after about 1.5 s (~25 exist at any moment). A few
    // stack dumps and CSVs come and go too.
    const DURATION = 20_000;
    const EVERY = 60;
    const live: { rank: number; born: number; second: boolean }[] = [];
    let created = 0;
    let deleted = 0;
    for (let tick = 0; Date.now() - t0 < DURATION; tick++) {
      const now = Date.now();
      const rank = 1000 + created++;
      beat(churn, rank, 1);
      live.push({ rank, born: now, second: false });
      for (const f of live) {
        if (!f.second && now - f.born >= 500) {
          beat(churn, f.rank, 2);
          f.second = true;
        }
      }
      while (live.length > 0 && now - live[0].born >= 1500) {
        unlinkSync(join(churn, `heartbeat_rank${live.shift()!.rank}.jsonl`));
        deleted++;
      }
      if (tick % 10 === 0) {
        writeFileSync(join(churn, `stackdump_${tick}.txt`), 'Thread 0x1\n');
        if (tick >= 10) unlinkSync(join(churn, `stackdump_${tick - 10}.txt`));
      }
      await sleep(Math.max(0, t0 + (tick + 1) * EVERY - Date.now()));
    }
    const elapsed = (Date.now() - t0) / 1000;
    for (const f of live) {
      if (!f.second) beat(churn, f.rank, 2);
    }
    await sleep(600);
    for (const f of live.splice(0)) {
      unlinkSync(join(churn, `heartbeat_rank${f.rank}.jsonl`));
      deleted++;
    }
    for (const n of readdirSync(churn)) rmSync(join(churn, n));
    const cpu = (cpuSeconds(tw.pid) - cpu0) / elapsed;
    t.diagnostic(`${created} heartbeat files created and ${deleted} deleted in ${elapsed.toFixed(1)} s (${Math.round((created / elapsed) * 60)}/min); trainwatch CPU ${(cpu * 100).toFixed(1)}% of a core`);
    assert.equal(true, created / elapsed >= 15, 'about 1,000 files a minute');
    assert.equal(true, cpu < 0.5, `trainwatch used ${(cpu * 100).toFixed(1)}% of a core`);
    // Every churned file's two records, exactly once.
    const m = await scrapeUntil(tw.url, (m) => {
      let sum = 0;
      for (let r = 1000; r < 1000 + created; r++) sum += records(m, 'churn', r);
      return sum === 2 * created;
    }, 'every record of the churned files', 20_000);
    const wrong = [];
    for (let r = 1000; r < 1000 + created; r++) if (records(m, 'churn', r) !== 2 || step(m, 'churn', r) !== 2) wrong.push(r);
    assert.deepEqual([], wrong, 'ranks whose records were not counted exactly twice');
    // Descriptors and tails back to where they were, within a few sweeps.
    await waitFor(() => fdTargets(tw.pid).length <= fds0 + 2, `fds back near the baseline of ${fds0}`, 5000).catch((e) => {
      throw new Error(`${(e as Error).message}; now ${fdTargets(tw.pid).length}: ${fdTargets(tw.pid).join(' ')}`);
    });
    await scrapeUntil(tw.url, (m) => m.get('trainwatch_files_watched')! <= watched0, 'files_watched back to the baseline', 5000);
    const n = await writer.stop();
    const m2 = await scrapeUntil(tw.url, (m) => records(m, 'steady', 0) === n, `the steady run's ${n} records`);
    assert.equal(n, step(m2, 'steady', 0));
    assert.deepEqual({}, nonZeroParseErrors(m2));
    await assertServing(tw);
  });

  test('symlink_loop_in_run_root: no crash, no runaway, the real runs still discovered', { timeout: 60_000 }, async (t) => {
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
      const tw = await startTw(t, ['--root', base, '--tail.sweep-interval-s', '0.2', ...(poll ? ['--poll'] : [])]);
      await scrapeUntil(tw.url, (m) => records(m, 'real', 0) + records(m, 'same', 0) === 5, `the real run${poll ? ' (polling)' : ''}`);
      // A run that appears later is still discovered.
      const late = join(base, `late${poll ? 'p' : ''}`);
      mkdirSync(late);
      beat(late, 0, 1);
      const cpu0 = cpuSeconds(tw.pid);
      const t0 = Date.now();
      await scrapeUntil(tw.url, (m) => records(m, `late${poll ? 'p' : ''}`, 0) === 1, 'a run created later');
      await sleep(2000);
      const cpu = (cpuSeconds(tw.pid) - cpu0) / ((Date.now() - t0) / 1000);
      const m = await scrape(tw.url);
      t.diagnostic(`${poll ? 'polling' : 'inotify'}: runs_watched ${m.get('trainwatch_runs_watched')}, CPU ${(cpu * 100).toFixed(1)}% of a core`);
      assert.equal(true, cpu < 0.3, `no runaway: ${(cpu * 100).toFixed(1)}% of a core`);
      // Each directory is one run, whatever its names: the loops are not runs.
      assert.deepEqual([`late${poll ? 'p' : ''}`, 'real'], [...m.keys()].filter((k) => k.startsWith('trainwatch_run_ranks{')).map((k) => /run="([^"]+)"/.exec(k)![1]).map((r) => (r === 'same' ? 'real' : r)).sort());
      assert.equal(5, records(m, 'real', 0) + records(m, 'same', 0));
      // A loop is worth one warning, not one per sweep (10 sweeps went by).
      const warnings = tw.logs().split('\n').filter((l) => /level=warn/.test(l));
      const paths = warnings.map((l) => /path=(\S+)/.exec(l)?.[1]);
      assert.deepEqual(['a', 'b', 'c1', 'c2'].map((n) => join(base, n)), paths.sort(), `warnings:\n${warnings.join('\n')}`);
      await assertServing(tw);
      await tw.stop();
      rmSync(late, { recursive: true });
      assert.equal(true, existsSync(join(base, 'a')) && readlinkSync(join(base, 'a')) === base);
    }
  });
});
