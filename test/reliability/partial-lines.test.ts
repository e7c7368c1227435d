// Reliability of the real trainwatch process around partial lines, tiny files and restarts.
// Files are written the trainer's way (open, append, close per write); every assertion is on
// what /metrics says: trainwatch_records_total, trainwatch_step, trainwatch_parse_errors_total.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { assertServing, beat, nonZeroParseErrors, record, records, scrapeUntil, startTw, step, scratch } from '../helpers/reliability.js';

const FAST = ['--tail.sweep-interval-s', '0.1'];

describe('partial lines and restarts', { concurrency: 4 }, () => {
  test('partial_line_held_across_many_writes: a slow writer writing each record in small pieces over time', { timeout: 60_000 }, async (t) => {
    const base = scratch(t);
    const run = join(base, 'slow');
    mkdirSync(run);
    const tw = await startTw(t, ['--dir', run, ...FAST]);
    const f = join(run, 'heartbeat_rank0.jsonl');
    const f1 = join(run, 'heartbeat_rank1.jsonl');
    let rnd = 12345;
    const next = () => ((rnd = (rnd * 1103515245 + 12345) >>> 0), rnd / 2 ** 32);
    for (let i = 1; i <= 5; i++) {
      // Multi-byte characters, so that some cuts fall inside a UTF-8 sequence.
      const bytes = Buffer.from(record(0, i, 'progress', { note: 'héllo ✓ wörld ✓✓ ünïcødé' }));
      const cuts = new Set<number>();
      while (cuts.size < 7) cuts.add(1 + Math.floor(next() * (bytes.length - 2)));
      const at = [0, ...[...cuts].sort((a, b) => a - b), bytes.length];
      for (let p = 0; p + 1 < at.length; p++) {
        appendFileSync(f, bytes.subarray(at[p], at[p + 1]));
        // Beat rank 1 in between: the other file keeps flowing while rank 0 holds a partial line.
        beat(run, 1, i * 10 + p);
        if (p + 2 < at.length) {
          // Every byte on disk has been read, the fragment included.
          const onDisk = statSync(f).size + statSync(f1).size;
          const m = await scrapeUntil(tw.url, (m) => m.get('trainwatch_read_bytes_total') === onDisk, `trainwatch to read piece ${p + 1} of record ${i}`);
          assert.equal(i - 1, records(m, 'slow', 0), `record ${i} after piece ${p + 1} of ${at.length - 1}`);
          assert.deepEqual({}, nonZeroParseErrors(m));
        }
      }
      await scrapeUntil(tw.url, (m) => records(m, 'slow', 0) === i, `record ${i} once its newline arrived`);
    }
    const m = await scrapeUntil(tw.url, (m) => records(m, 'slow', 1) === 40, 'the 40 records of rank 1');
    assert.equal(5, records(m, 'slow', 0));
    assert.equal(5, step(m, 'slow', 0));
    assert.deepEqual({}, nonZeroParseErrors(m));
    await assertServing(tw);
  });

  test('kill9_with_partial_line_then_restart: the completed line is counted once', { timeout: 60_000 }, async (t) => {
    const base = scratch(t);
    const run = join(base, 'k9');
    mkdirSync(run);
    const f = join(run, 'heartbeat_rank0.jsonl');
    for (let i = 1; i <= 20; i++) beat(run, 0, i);
    const last = Buffer.from(record(0, 21));
    const cut = 37;
    appendFileSync(f, last.subarray(0, cut));
    let tw = await startTw(t, ['--dir', run, ...FAST]);
    let m = await scrapeUntil(tw.url, (m) => records(m, 'k9', 0) === 20, '20 records');
    await tw.kill9();
    // Restarted while the line is still partial: it is held, not parsed, not counted.
    tw = await startTw(t, ['--dir', run, ...FAST]);
    // Once it has read every byte on disk, the fragment included, it has had its chance to miscount.
    m = await scrapeUntil(tw.url, (m) => m.get('trainwatch_read_bytes_total') === statSync(f).size, 'the whole file after the first restart');
    assert.equal(20, records(m, 'k9', 0));
    assert.deepEqual({}, nonZeroParseErrors(m));
    await tw.kill9();
    // The trainer completes the line while trainwatch is down.
    appendFileSync(f, last.subarray(cut));
    tw = await startTw(t, ['--dir', run, ...FAST]);
    m = await scrapeUntil(tw.url, (m) => records(m, 'k9', 0) === 21, 'the completed record');
    assert.equal(21, step(m, 'k9', 0));
    // And a line completed while trainwatch runs, after a kill -9 that left it partial.
    const r22 = Buffer.from(record(0, 22));
    appendFileSync(f, r22.subarray(0, 50));
    await scrapeUntil(tw.url, (m) => m.get('trainwatch_read_bytes_total') === statSync(f).size, 'the fragment to be read before the kill');
    await tw.kill9();
    tw = await startTw(t, ['--dir', run, ...FAST]);
    await scrapeUntil(tw.url, (m) => records(m, 'k9', 0) === 21, '21 records');
    appendFileSync(f, r22.subarray(50));
    m = await scrapeUntil(tw.url, (m) => records(m, 'k9', 0) === 22, 'the record completed after restart');
    assert.equal(22, step(m, 'k9', 0));
    // A sentinel after it: once it is counted, the completed line cannot be counted again.
    beat(run, 0, 23);
    m = await scrapeUntil(tw.url, (m) => step(m, 'k9', 0) === 23, 'the sentinel record');
    assert.equal(23, records(m, 'k9', 0));
    assert.deepEqual({}, nonZeroParseErrors(m));
    await assertServing(tw);
  });

  test('truncate_and_regrow_while_down: a restart reads what the file holds now', { timeout: 60_000 }, async (t) => {
    const base = scratch(t);
    const run = join(base, 'tr');
    mkdirSync(run);
    const f = join(run, 'heartbeat_rank0.jsonl');
    for (let i = 1; i <= 40; i++) beat(run, 0, i);
    let tw = await startTw(t, ['--dir', run, ...FAST]);
    await scrapeUntil(tw.url, (m) => records(m, 'tr', 0) === 40, '40 records');
    await tw.kill9();
    // Truncated and regrown past the old size while trainwatch was down.
    truncateSync(f, 0);
    for (let i = 1001; i <= 1060; i++) beat(run, 0, i);
    tw = await startTw(t, ['--dir', run, ...FAST]);
    let m = await scrapeUntil(tw.url, (m) => step(m, 'tr', 0) === 1060, 'step 1060');
    assert.equal(60, records(m, 'tr', 0));
    await tw.kill9();
    // Truncated and regrown to less than before.
    truncateSync(f, 0);
    for (let i = 2001; i <= 2010; i++) beat(run, 0, i);
    tw = await startTw(t, ['--dir', run, ...FAST]);
    m = await scrapeUntil(tw.url, (m) => step(m, 'tr', 0) === 2010, 'step 2010');
    assert.equal(10, records(m, 'tr', 0));
    // Then followed live: appends after the restart continue from there.
    beat(run, 0, 2011);
    m = await scrapeUntil(tw.url, (m) => records(m, 'tr', 0) === 11, '11 records');
    assert.equal(2011, step(m, 'tr', 0));
    assert.deepEqual({}, nonZeroParseErrors(m));
    await assertServing(tw);
  });

  test('tiny_files: a one-line file, an empty file and a file with no trailing newline, at startup and created later', { timeout: 60_000 }, async (t) => {
    const base = scratch(t);
    const make = (name: string) => {
      const run = join(base, name);
      mkdirSync(run);
      writeFileSync(join(run, 'heartbeat_rank0.jsonl'), record(0, 7)); // one line
      writeFileSync(join(run, 'heartbeat_rank1.jsonl'), ''); // empty
      writeFileSync(join(run, 'heartbeat_rank2.jsonl'), record(2, 9).trimEnd()); // no trailing newline
      // One line longer than the startup window (a record with a large list field).
      writeFileSync(join(run, 'heartbeat_rank3.jsonl'), record(3, 11, 'progress', { gate_branch_shares: Array.from({ length: 700 }, (_, i) => i / 700) }));
      return run;
    };
    const pre = make('pre');
    const tw = await startTw(t, ['--root', base, '--tail.startup-bytes', '4096', ...FAST]);
    const post = make('post');
    for (const run of ['pre', 'post']) {
      const m = await scrapeUntil(tw.url, (m) => records(m, run, 0) === 1 && records(m, run, 3) === 1, `${run}: the one-line files`);
      assert.equal(7, step(m, run, 0));
      assert.equal(11, step(m, run, 3));
      assert.equal(undefined, step(m, run, 1), `${run}: an empty file has no series`);
      assert.equal(undefined, step(m, run, 2), `${run}: a line without its newline is not parsed yet`);
    }
    for (const run of [pre, post]) {
      appendFileSync(join(run, 'heartbeat_rank2.jsonl'), '\n');
      beat(run, 1, 3);
      beat(run, 0, 8);
    }
    for (const run of ['pre', 'post']) {
      const m = await scrapeUntil(tw.url, (m) => records(m, run, 2) === 1 && records(m, run, 1) === 1 && records(m, run, 0) === 2, `${run}: the grown files`);
      assert.equal(9, step(m, run, 2));
      assert.equal(3, step(m, run, 1));
      assert.equal(8, step(m, run, 0));
      assert.equal(1, records(m, run, 3));
    }
    // A sentinel in every file: once each is counted, nothing before it can be counted again.
    for (const run of [pre, post]) for (const r of [0, 1, 2, 3]) beat(run, r, 99);
    const m = await scrapeUntil(tw.url, (m) => ['pre', 'post'].every((run) => [0, 1, 2, 3].every((r) => step(m, run, r) === 99)), 'the sentinel records');
    for (const run of ['pre', 'post'])
      assert.deepEqual(
        [3, 2, 2, 2],
        [0, 1, 2, 3].map((r) => records(m, run, r)),
      );
    assert.deepEqual({}, nonZeroParseErrors(m));
    await assertServing(tw);
  });

  test('identical_first_lines: two rank files that start with the same bytes are two series', { timeout: 60_000 }, async (t) => {
    const base = scratch(t);
    const run = join(base, 'twins');
    mkdirSync(run);
    // A tailer that recognises files by a checksum of their first line (or first bytes) would
    // take these two files for one file. The first line is the same launcher line in both (not a
    // record: it lacks rank and step), and each first record shares a long prefix up to `rank`.
    const head = JSON.stringify({ msg: 'launcher', note: 'x'.repeat(1000) }) + '\n';
    const ts = (Date.now() / 1000).toFixed(3);
    const rec = (rank: number, s: number) =>
      `{"ts": ${ts}, "iso": "", "pid": 4242, "pad": "${'y'.repeat(300)}", "step": ${s}, "msg": "progress", "rank": ${rank}}\n`;
    for (const r of [0, 1]) writeFileSync(join(run, `heartbeat_rank${r}.jsonl`), head + rec(r, 1));
    const tw = await startTw(t, ['--root', base, ...FAST]);
    let m = await scrapeUntil(tw.url, (m) => records(m, 'twins', 0) === 1 && records(m, 'twins', 1) === 1, 'both ranks');
    for (let s = 2; s <= 10; s++) for (const r of [0, 1]) appendFileSync(join(run, `heartbeat_rank${r}.jsonl`), rec(r, s + r * 100));
    // A third file created later with the same first bytes.
    writeFileSync(join(run, 'heartbeat_rank2.jsonl'), head + rec(2, 1));
    m = await scrapeUntil(
      tw.url,
      (m) => records(m, 'twins', 0) === 10 && records(m, 'twins', 1) === 10 && records(m, 'twins', 2) === 1,
      'all records of the three files',
    );
    assert.equal(10, step(m, 'twins', 0));
    assert.equal(110, step(m, 'twins', 1));
    assert.equal(1, step(m, 'twins', 2));
    assert.equal(3, m.get('trainwatch_run_ranks{run="twins"}'));
    assert.deepEqual({ missing_field: 3 }, nonZeroParseErrors(m));
    await assertServing(tw);
  });
});
