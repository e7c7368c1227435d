// Reliability of the real trainwatch process across rotations, while a writer in another
// process keeps appending the trainer's way (open, append one record, close).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { scrape, waitFor } from '../helpers/proc.js';
import {
  assertServing,
  beat,
  fdTargets,
  nonZeroParseErrors,
  record,
  records,
  scrapeUntil,
  startTw,
  startWriter,
  step,
  scratch,
  sweepsPassed,
  SWEEP_SENTINEL,
} from '../helpers/reliability.js';

const FAST = ['--tail.sweep-interval-s', '0.1'];

/** Records in every file of `dir` whose name starts with `prefix` (.gz decompressed). */
function linesIn(dir: string, prefix: string): number {
  let n = 0;
  for (const f of readdirSync(dir)) {
    if (!f.startsWith(prefix)) continue;
    const buf = readFileSync(join(dir, f));
    const text = (f.endsWith('.gz') ? gunzipSync(buf) : buf).toString('utf8');
    n += text.split('\n').length - 1;
  }
  return n;
}

/** The state letter of /proc/<pid>/stat (T: stopped). */
function procState(pid: number): string {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
}

describe('rotation', { concurrency: 4 }, () => {
  test(
    'rename_and_create_rotation_under_continuous_writing: many rotations while a writer appends, nothing lost or read twice',
    { timeout: 120_000 },
    async (t) => {
      const base = scratch(t);
      const run = join(base, 'rot');
      mkdirSync(run);
      const f = join(run, 'heartbeat_rank0.jsonl');
      beat(run, 0, 0, 'boot');
      // Sweeps once a second: between them only file events can follow a rename, and events on a
      // file stay with its old inode after a rename (what broke here before).
      const tw = await startTw(t, ['--dir', run, '--tail.sweep-interval-s', '1']);
      // 3 ms between the writer's open and its write (a GIL switch in a threaded trainer): many
      // renames fall there, and that record lands in the rotated file after trainwatch drained it.
      const writer = startWriter(t, f, 0, 1, 100_000, 200, 3);
      // Rotate only once the writer runs: a file generation that its writer creates just before
      // it is rotated away is lost to any tailer that never got to open it.
      await scrapeUntil(tw.url, (m) => records(m, 'rot', 0) >= 10, 'the writer to be running');
      let rotations = 0;
      while (rotations < 25) {
        // The writer pauses (SIGSTOP) wherever it is, often between its open and its write, and
        // trainwatch catches up with every record on disk before the rename: a tailer that had
        // not yet opened a file generation would lose it, however fast, so the test does not
        // race trainwatch against the writer, only rotations against the writer's open file.
        writer.proc.kill('SIGSTOP');
        await waitFor(() => procState(writer.proc.pid!) === 'T', 'the writer to stop');
        const onDisk = linesIn(run, 'heartbeat_rank0.jsonl') - 1;
        await scrapeUntil(tw.url, (m) => records(m, 'rot', 0) === onDisk, `trainwatch to catch up before rotation ${rotations + 1}`);
        // logrotate's `create` style: rename away; the trainer's next append creates a fresh file.
        // Every other rotated file is compressed, one rotation later (logrotate's delaycompress):
        // a record the writer had opened the file for just before the rename lands there late.
        if (existsSync(f)) {
          renameSync(f, `${f}.${++rotations}`);
          if (rotations % 2 === 0) spawnSync('gzip', [`${f}.${rotations - 1}`]);
        }
        writer.proc.kill('SIGCONT');
        // A few records into the new generation before the next pause.
        await scrapeUntil(tw.url, (m) => records(m, 'rot', 0) >= onDisk + 5, `records after rotation ${rotations}`);
      }
      const N = await writer.stop();
      assert.equal(N + 1, linesIn(run, 'heartbeat_rank0.jsonl'), 'the files hold every record once');
      // A sentinel after the writer's last record: once it is counted, everything before it was read.
      beat(run, 0, N + 1);
      const m = await scrapeUntil(tw.url, (m) => step(m, 'rot', 0) === N + 1, "the sentinel record after the writer's last").catch(async (e) => {
        throw new Error(
          `${(e as Error).message}: have ${records(await scrape(tw.url), 'rot', 0)} of ${N + 1} after ${rotations} rotations and ${writer.late()} late writes`,
        );
      });
      t.diagnostic(`${N} records, ${rotations} rotations, ${writer.late()} records written into a file already rotated away`);
      assert.equal(true, writer.late() >= 3, 'the test provoked late writes');
      assert.equal(N + 1, records(m, 'rot', 0), 'every record once, none twice');
      assert.equal(1, records(m, 'rot', 0, 'boot'));
      assert.deepEqual({}, nonZeroParseErrors(m));
      await assertServing(tw);
    },
  );

  test('copytruncate_under_continuous_writing: truncations while a writer appends, nothing lost or read twice', { timeout: 60_000 }, async (t) => {
    const base = scratch(t);
    const run = join(base, 'ct');
    mkdirSync(run);
    const f = join(run, 'heartbeat_rank0.jsonl');
    const tw = await startTw(t, ['--dir', run, ...FAST]);
    const writer = startWriter(t, f, 0, 1, 100_000, 400);
    let copied = 0;
    let truncations = 0;
    while (truncations < 15) {
      // A few records into the file before each copytruncate.
      await scrapeUntil(tw.url, (m) => records(m, 'ct', 0) >= copied + 5, `records before truncation ${truncations + 1}`);
      // copytruncate copies the file, then truncates it in place. Lines written between the copy
      // and the truncate exist only in the copy: losing them is inherent to copytruncate (any
      // tailer of the live file loses them), and so are lines the tailer had not read yet when
      // the truncate came. So the writer pauses (SIGSTOP) around copy + truncate, and trainwatch
      // is given the moment it needs to catch up first, as its sweep has in reality long before
      // a rotation. A record the writer had opened but not written when stopped lands in the
      // truncated file (O_APPEND), so nothing is lost by the pause itself.
      writer.proc.kill('SIGSTOP');
      await waitFor(() => procState(writer.proc.pid!) === 'T', 'the writer to stop');
      const inFile = readFileSync(f, 'utf8').split('\n').length - 1;
      await scrapeUntil(tw.url, (m) => records(m, 'ct', 0) === copied + inFile, 'trainwatch to catch up before the truncate');
      copyFileSync(f, `${f}.${++truncations}`);
      truncateSync(f, 0);
      copied += inFile;
      writer.proc.kill('SIGCONT');
    }
    const N = await writer.stop();
    assert.equal(N, linesIn(run, 'heartbeat_rank0.jsonl'));
    // A sentinel after the writer's last record: once it is counted, everything before it was read.
    beat(run, 0, N + 1);
    const m = await scrapeUntil(tw.url, (m) => step(m, 'ct', 0) === N + 1, "the sentinel record after the writer's last");
    assert.equal(N + 1, records(m, 'ct', 0), 'every record once, none twice');
    assert.deepEqual({}, nonZeroParseErrors(m));
    await assertServing(tw);
  });

  test(
    'copytruncate_without_pausing_the_writer: records written just before each copy are read from the copy; every record in a file is read once',
    { timeout: 60_000 },
    async (t) => {
      const base = scratch(t);
      const run = join(base, 'ctw');
      mkdirSync(run);
      const f = join(run, 'heartbeat_rank0.jsonl');
      // Between two reads (one window of tail.event-coalesce-ms) records pile up; after the
      // truncate, the copy is their only home. (A second copytruncate before trainwatch read the
      // first one's generation would lose that generation: one copy holds our mark, not both.)
      const tw = await startTw(t, ['--dir', run, '--tail.event-coalesce-ms', '400']);
      const writer = startWriter(t, f, 0, 1, 100_000, 400);
      await scrapeUntil(tw.url, (m) => records(m, 'ctw', 0) >= 10, 'the writer to be running');
      const pace = (ms: number) => new Promise((r) => setTimeout(r, ms)); // the writer's pace between rotations, not a wait for a verdict
      for (let i = 1; i <= 6; i++) {
        await pace(1500);
        // logrotate's copytruncate with dateext: copy, then truncate in place, the writer never stops.
        copyFileSync(f, `${f}-2026113${i}`);
        truncateSync(f, 0);
      }
      await pace(200);
      const N = await writer.stop();
      // Records written between a copy and its truncate are in no file: nobody can read them.
      const inFiles = linesIn(run, 'heartbeat_rank0.jsonl');
      const m = await scrapeUntil(tw.url, (m) => records(m, 'ctw', 0) >= inFiles, `the ${inFiles} records in the files (of ${N} written)`).catch(async (e) => {
        throw new Error(`${(e as Error).message}: have ${records(await scrape(tw.url), 'ctw', 0)}`);
      });
      assert.equal(true, records(m, 'ctw', 0) <= N, 'no record read twice');
      assert.equal(0, m.get('trainwatch_parse_errors_total{reason="copytruncate_lost"}') ?? 0, 'every truncation found its copy');
      await assertServing(tw);
    },
  );

  test('gz_rotated_file_beside_live_one: never opened, never counted', { timeout: 60_000 }, async (t) => {
    const base = scratch(t);
    const run = join(base, 'gz');
    mkdirSync(run);
    const many = (rank: number, from: number, n: number) => Array.from({ length: n }, (_, i) => record(rank, from + i)).join('');
    writeFileSync(join(run, 'heartbeat_rank0.jsonl.2.gz'), gzipSync(many(0, 1, 100)));
    writeFileSync(join(run, 'heartbeat_rank0.jsonl.1'), many(0, 101, 100));
    writeFileSync(join(run, 'heartbeat_rank1.jsonl.gz'), gzipSync(many(1, 1, 100))); // rank 1 has no live file
    writeFileSync(join(run, 'heartbeat_rank0.jsonl'), many(0, 301, 10));
    // Not even a gzip file: a .gz name with plain JSON lines in it.
    writeFileSync(join(run, 'heartbeat_rank2.jsonl.gz'), many(2, 1, 10));
    const tw = await startTw(t, ['--root', base, ...FAST, '--watch.crash-detect', '1']);
    let m = await scrapeUntil(tw.url, (m) => records(m, 'gz', 0) === 10, '10 records of the live file');
    // A rotation while running: the live file is compressed in place, then the trainer goes on.
    for (let i = 311; i <= 315; i++) beat(run, 0, i);
    await scrapeUntil(tw.url, (m) => records(m, 'gz', 0) === 15, '15 records');
    const liveBytes = statSync(join(run, 'heartbeat_rank0.jsonl')).size;
    assert.equal(0, spawnSync('gzip', [join(run, 'heartbeat_rank0.jsonl')]).status);
    for (let i = 316; i <= 320; i++) beat(run, 0, i);
    m = await scrapeUntil(tw.url, (m) => records(m, 'gz', 0) === 20, '20 records');
    // Sentinels after everything else, in every rank's live file (ranks 1 and 2 have none yet):
    // once they are counted, every sweep that could have opened a rotated file has run.
    for (const r of [0, 1, 2]) beat(run, r, 999);
    m = await scrapeUntil(tw.url, (m) => [0, 1, 2].every((r) => step(m, 'gz', r) === 999), 'the sentinel records');
    await sweepsPassed(tw.url, base, 2);
    assert.deepEqual(
      [],
      fdTargets(tw.pid).filter((p) => p.includes('.gz') || p.endsWith('.jsonl.1')),
      'trainwatch never opens a rotated file',
    );
    m = await scrape(tw.url);
    assert.equal(21, records(m, 'gz', 0));
    assert.equal(1, records(m, 'gz', 1), 'rank 1: only its sentinel, not its .gz');
    assert.equal(1, records(m, 'gz', 2), 'rank 2: only its sentinel, not its .gz');
    const live = [
      join(run, 'heartbeat_rank0.jsonl'),
      join(run, 'heartbeat_rank1.jsonl'),
      join(run, 'heartbeat_rank2.jsonl'),
      join(base, SWEEP_SENTINEL, 'heartbeat_rank0.jsonl'),
    ];
    assert.equal(liveBytes + live.reduce((n, p) => n + statSync(p).size, 0), m.get('trainwatch_read_bytes_total'), 'only the live files were read');
    assert.deepEqual({}, nonZeroParseErrors(m));
    await assertServing(tw);
  });

  test('delete_and_recreate_with_reused_inode: a new file with the old inode number is read from its start', { timeout: 60_000 }, async (t) => {
    const base = scratch(t);
    const run = join(base, 'ino');
    mkdirSync(run);
    const f = join(run, 'heartbeat_rank0.jsonl');
    for (let i = 1; i <= 10; i++) beat(run, 0, i);
    const tw = await startTw(t, ['--dir', run, ...FAST]);
    await scrapeUntil(tw.url, (m) => records(m, 'ino', 0) === 10, '10 records');
    const oldIno = statSync(f).ino;
    const oldSize = statSync(f).size;
    rmSync(f);
    // Only once trainwatch has closed its descriptor can the inode be freed and reused.
    await waitFor(() => !fdTargets(tw.pid).some((p) => p.startsWith(f)), 'trainwatch to release the deleted file', 60_000);
    // ext4 hands a freed inode out again at once; create scratch files until one gets it.
    let reused = false;
    for (let i = 0; i < 2000 && !reused; i++) {
      const scratch = join(run, `scratch_${i}.tmp`);
      writeFileSync(scratch, '');
      if (statSync(scratch).ino === oldIno) {
        renameSync(scratch, f); // the same inode, now at the heartbeat path, empty
        reused = true;
      }
    }
    if (!reused) writeFileSync(f, '');
    t.diagnostic(reused ? `inode ${oldIno} reused for the new file` : `inode ${oldIno} was not reused on this file system; checked a plain re-creation`);
    // Grow the new file past the old size, so that a tail that kept the old offset would skip data.
    for (let i = 101; i <= 125; i++) beat(run, 0, i);
    assert.equal(true, statSync(f).size > oldSize);
    if (reused) assert.equal(oldIno, statSync(f).ino);
    // A sentinel after them: once it is counted, every record before it was read, or skipped.
    beat(run, 0, 126);
    const m = await scrapeUntil(tw.url, (m) => step(m, 'ino', 0) === 126, 'the sentinel record');
    assert.equal(36, records(m, 'ino', 0), 'the new file read from its start, once');
    assert.deepEqual({}, nonZeroParseErrors(m));
    for (const s of readdirSync(run)) if (s.startsWith('scratch_')) rmSync(join(run, s));
    await assertServing(tw);
  });
});
