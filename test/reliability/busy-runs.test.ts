// Busy run directories (more appends per coalescing window than tail.busy-events) are polled on
// a timer instead of woken by every append. These scenarios check that rotations, new rank
// files, .HALT and deletion are still followed while a run is polled, and that a run that goes
// quiet is back on its file events. trainwatch_runs_polled tells which mode a run is in.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scrape } from '../helpers/proc.js';
import { assertServing, beat, fdTargets, nonZeroParseErrors, records, scrapeUntil, startTw, startWriter, step, scratch } from '../helpers/reliability.js';

/** Sweeps so rare that only file events and the busy poll can be what reads a record. */
const NO_SWEEPS = ['--tail.sweep-interval-s', '3600'];

const polled = (m: Map<string, number>) => m.get('trainwatch_runs_polled');

/** Lines in every file of `dir` whose name starts with `prefix`. */
function linesIn(dir: string, prefix: string): number {
  let n = 0;
  for (const f of readdirSync(dir)) if (f.startsWith(prefix)) n += readFileSync(join(dir, f), 'utf8').split('\n').length - 1;
  return n;
}

describe('busy runs', { concurrency: 2 }, () => {
  test('a busy run that rotates its file while polled loses no record and reads none twice', { timeout: 90_000 }, async (t) => {
    const base = scratch(t);
    const run = join(base, 'busy');
    mkdirSync(run);
    const f = join(run, 'heartbeat_rank0.jsonl');
    const tw = await startTw(t, ['--dir', run, ...NO_SWEEPS]);
    // 200 records/s, 3 ms between the writer's open and its write: some records land in a file
    // that was renamed away after the writer opened it.
    const writer = startWriter(t, f, 0, 1, 100_000, 200, 3);
    let rotations = 0;
    while (rotations < 3) {
      await scrapeUntil(tw.url, (m) => polled(m) === 1, `the busy run to be polled (before rotation ${rotations + 1})`);
      renameSync(f, `${f}.${++rotations}`);
      // The rename ends polling: renames are followed by file events until the entries settle.
      await scrapeUntil(tw.url, (m) => polled(m) === 0, `the run to be watched again after rotation ${rotations}`);
    }
    const polledAt = records(await scrapeUntil(tw.url, (m) => polled(m) === 1, 'the busy run to be polled again after the last rotation'), 'busy', 0);
    await scrapeUntil(tw.url, (m) => records(m, 'busy', 0) >= polledAt + 20, 'records read while polled');
    const N = await writer.stop();
    assert.equal(N, linesIn(run, 'heartbeat_rank0.jsonl'), 'the files hold every record once');
    // A sentinel after the writer's last record: once it is counted, everything before it was read.
    beat(run, 0, N + 1);
    const m = await scrapeUntil(tw.url, (m) => step(m, 'busy', 0) === N + 1, "the sentinel record after the writer's last").catch(async (e) => {
      throw new Error(
        `${(e as Error).message}: have ${records(await scrape(tw.url), 'busy', 0)} of ${N + 1} after ${rotations} rotations and ${writer.late()} late writes`,
      );
    });
    t.diagnostic(`${N} records, ${rotations} rotations while polled, ${writer.late()} records written into a file already rotated away`);
    assert.equal(N + 1, records(m, 'busy', 0), 'every record once, none twice');
    assert.deepEqual({}, nonZeroParseErrors(m));
    await assertServing(tw);
  });

  test('a busy run that goes quiet is watched again, and a record after the pause is read from its file event', { timeout: 60_000 }, async (t) => {
    const base = scratch(t);
    const run = join(base, 'pause');
    mkdirSync(run);
    const tw = await startTw(t, ['--dir', run, ...NO_SWEEPS]);
    const writer = startWriter(t, join(run, 'heartbeat_rank0.jsonl'), 0, 1, 100_000, 200);
    await scrapeUntil(tw.url, (m) => polled(m) === 1, 'the busy run to be polled');
    const N = await writer.stop();
    await scrapeUntil(tw.url, (m) => records(m, 'pause', 0) === N, `the ${N} records of the busy phase`);
    await scrapeUntil(tw.url, (m) => polled(m) === 0, 'the quiet run to be watched again');
    // Neither a sweep (once an hour here) nor the busy poll (off for this run, as the gauge says)
    // can read these: only the run's inotify watch can.
    beat(run, 0, N + 1);
    let m = await scrapeUntil(tw.url, (m) => records(m, 'pause', 0) === N + 1, 'the record after the pause');
    assert.equal(N + 1, step(m, 'pause', 0));
    beat(run, 0, N + 2);
    m = await scrapeUntil(tw.url, (m) => step(m, 'pause', 0) === N + 2, 'the next record');
    assert.equal(0, polled(m), 'two records are no burst');
    assert.deepEqual({}, nonZeroParseErrors(m));
    await assertServing(tw);
  });

  test('a new rank file and .HALT in a busy run are seen while it is polled', { timeout: 60_000 }, async (t) => {
    const base = scratch(t);
    const run = join(base, 'grow');
    mkdirSync(run);
    const tw = await startTw(t, ['--dir', run, ...NO_SWEEPS]);
    const writer = startWriter(t, join(run, 'heartbeat_rank0.jsonl'), 0, 1, 100_000, 200);
    await scrapeUntil(tw.url, (m) => polled(m) === 1, 'the busy run to be polled');
    for (let i = 1; i <= 3; i++) beat(run, 1, i);
    await scrapeUntil(tw.url, (m) => records(m, 'grow', 1) === 3, 'the 3 records of the new rank file');
    await scrapeUntil(tw.url, (m) => polled(m) === 1, 'the busy run to be polled again');
    // The operator (or the trainer) stops the run by hand.
    writeFileSync(join(run, '.HALT'), 'halt: manual\n');
    await scrapeUntil(tw.url, (m) => m.get('trainwatch_run_halted{run="grow"}') === 1, '.HALT to be seen');
    const N = await writer.stop();
    const m = await scrapeUntil(tw.url, (m) => records(m, 'grow', 0) === N, `the ${N} records of rank 0`);
    assert.equal(3, records(m, 'grow', 1));
    assert.deepEqual({}, nonZeroParseErrors(m));
    await assertServing(tw);
  });

  test('a busy run whose directory is deleted while polled: its series and descriptors go', { timeout: 60_000 }, async (t) => {
    const base = scratch(t);
    const run = join(base, 'gone');
    const steady = join(base, 'steady');
    mkdirSync(run);
    mkdirSync(steady);
    beat(steady, 0, 1);
    const tw = await startTw(t, ['--root', base, '--tail.sweep-interval-s', '0.5']);
    const writer = startWriter(t, join(run, 'heartbeat_rank0.jsonl'), 0, 1, 100_000, 200);
    await scrapeUntil(tw.url, (m) => polled(m) === 1 && records(m, 'gone', 0) > 0, 'the busy run to be polled');
    // The writer fails once the directory is gone; that is the trainer's problem, not ours.
    rmSync(run, { recursive: true, force: true });
    await writer.kill();
    const m = await scrapeUntil(tw.url, (m) => m.get('trainwatch_runs_watched') === 1 && step(m, 'gone', 0) === undefined, 'the deleted run to be dropped');
    assert.equal(0, polled(m));
    assert.equal(1, step(m, 'steady', 0));
    assert.deepEqual(
      [],
      fdTargets(tw.pid).filter((p) => p.startsWith(run)),
      'no descriptor left in the deleted run',
    );
    await assertServing(tw);
  });
});
