import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, readdirSync, readlinkSync, renameSync, rmSync, truncateSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FdBudget, FileTail, type TailSink } from '../../src/source/tail.js';
import { tmpDir } from '../helpers/proc.js';

class Collect implements TailSink {
  lines: string[] = [];
  errors: string[] = [];
  resets = 0;
  read = 0;
  more = false;
  reset() {
    this.resets++;
    this.lines = [];
  }
  line(buf: Buffer, s: number, e: number) {
    this.lines.push(buf.toString('utf8', s, e));
  }
  error(reason: string) {
    this.errors.push(reason);
  }
  wantsMoreHistory() {
    return this.more;
  }
  bytes(n: number) {
    this.read += n;
  }
}

function setup(opts: Partial<{ maxLineBytes: number; startupBytes: number; startAtEnd: boolean }> = {}) {
  const d = tmpDir('tw-tail-');
  const path = join(d.path, 'heartbeat_rank0.jsonl');
  const sink = new Collect();
  const tail = new FileTail(path, sink, { maxLineBytes: 1 << 20, startupBytes: 4096, startAtEnd: false, ...opts });
  return { d, path, sink, tail, done: async () => (await tail.close(), d.cleanup()) };
}

test('appended whole lines are delivered once each, in order', async () => {
  const { path, sink, tail, done } = setup();
  appendFileSync(path, 'a\nb\n');
  await tail.poll();
  appendFileSync(path, 'c\n');
  await tail.poll();
  await tail.poll();
  assert.deepEqual(['a', 'b', 'c'], sink.lines);
  await done();
});

test('a partial line is held across many writes until its newline arrives', async () => {
  const { path, sink, tail, done } = setup();
  const line = '{"ts": 1, "rank": 0, "step": 5, "msg": "progress"}';
  for (const ch of line) {
    appendFileSync(path, ch);
    await tail.poll();
  }
  assert.deepEqual([], sink.lines);
  appendFileSync(path, '\n');
  await tail.poll();
  assert.deepEqual([line], sink.lines);
  await done();
});

test('copytruncate without a copy: reading restarts at 0, the unfinished partial line is dropped and counted, and the possible loss is counted', async () => {
  const { path, sink, tail, done } = setup();
  appendFileSync(path, 'a\nb\npart');
  await tail.poll();
  truncateSync(path, 0);
  await tail.poll();
  appendFileSync(path, 'c\n');
  await tail.poll();
  assert.deepEqual(['a', 'b', 'c'], sink.lines);
  assert.deepEqual(['copytruncate_lost', 'partial_line_dropped'], sink.errors);
  await done();
});

test('truncate and regrow past the old offset between two polls is detected as a truncation', async () => {
  const { path, sink, tail, done } = setup();
  appendFileSync(path, 'line-1\nline-2\n');
  await tail.poll();
  truncateSync(path, 0);
  appendFileSync(path, 'line-3 is much longer than before\nline-4\n');
  await tail.poll();
  assert.deepEqual(['line-1', 'line-2', 'line-3 is much longer than before', 'line-4'], sink.lines);
  await done();
});

test('gzip-style rotation: the old file is drained first, the new one is read from 0, nothing lost or repeated', async () => {
  const { d, path, sink, tail, done } = setup();
  appendFileSync(path, 'a\n');
  await tail.poll();
  appendFileSync(path, 'b\n'); // written just before rotation, not yet polled
  renameSync(path, path + '.gz');
  await tail.poll(); // path gone: drain old
  appendFileSync(path, 'c\n'); // the trainer's next append creates a fresh file
  await tail.poll();
  assert.deepEqual(['a', 'b', 'c'], sink.lines);
  assert.deepEqual(['heartbeat_rank0.jsonl', 'heartbeat_rank0.jsonl.gz'], readdirSync(d.path).sort());
  await done();
});

test('rename rotation and recreation seen in one poll: old remainder, then the whole new file', async () => {
  const { path, sink, tail, done } = setup();
  appendFileSync(path, 'a\n');
  await tail.poll();
  appendFileSync(path, 'b\n');
  renameSync(path, path + '.1');
  appendFileSync(path, 'c\nd\n');
  await tail.poll();
  assert.deepEqual(['a', 'b', 'c', 'd'], sink.lines);
  await done();
});

test('delete and recreate: the new file is read from the start', async () => {
  const { path, sink, tail, done } = setup();
  appendFileSync(path, 'a\nb\n');
  await tail.poll();
  rmSync(path);
  await tail.poll();
  appendFileSync(path, 'c\n');
  await tail.poll();
  assert.deepEqual(['a', 'b', 'c'], sink.lines);
  await done();
});

test('a deleted file is released: no descriptor stays open on it after the next poll', async () => {
  const { path, tail, done } = setup();
  appendFileSync(path, 'a\n');
  await tail.poll();
  const openOnIt = () =>
    readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`).startsWith(path);
      } catch {
        return false;
      }
    }).length;
  assert.equal(1, openOnIt());
  rmSync(path);
  await tail.poll();
  assert.equal(0, openOnIt());
  assert.equal(false, tail.isOpen);
  await done();
});

test('a line longer than the cap is skipped and counted; the lines around it are kept', async () => {
  const { path, sink, tail, done } = setup({ maxLineBytes: 100 });
  appendFileSync(path, 'a\n' + 'x'.repeat(250));
  await tail.poll();
  appendFileSync(path, 'y'.repeat(50) + '\nb\n');
  await tail.poll();
  assert.deepEqual(['a', 'b'], sink.lines);
  assert.deepEqual(['line_too_long'], sink.errors);
  await done();
});

test('startup on a large existing file reads only a bounded window at its end, from a line boundary', async () => {
  const { path, sink, tail, done } = setup({ startAtEnd: true, startupBytes: 4096 });
  const lines = Array.from({ length: 20000 }, (_, i) => `line-${i}`);
  writeFileSync(path, lines.join('\n') + '\n');
  await tail.poll();
  assert.equal(true, sink.read <= 4096, `read ${sink.read} bytes`);
  assert.equal('line-19999', sink.lines.at(-1));
  assert.equal(
    true,
    sink.lines.every((l) => /^line-\d+$/.test(l)),
  );
  assert.equal(true, statSync(path).size > 100_000);
  await done();
});

test('startup window doubles while the sink wants more history, with a reset before each pass, up to a cap', async () => {
  const { path, sink, tail, done } = setup({ startAtEnd: true, startupBytes: 4096 });
  writeFileSync(path, Array.from({ length: 200000 }, (_, i) => `line-${i}`).join('\n') + '\n');
  sink.more = true;
  await tail.poll();
  assert.equal(7, sink.resets); // 4 KiB, 8, 16, 32, 64, 128, 256 KiB = 64x the first window
  assert.equal(true, sink.lines.length > 20000);
  await done();
});

test('a path that is not there yet is fine, and its first lines are read when it appears', async () => {
  const { path, sink, tail, done } = setup({ startAtEnd: true });
  await tail.poll();
  assert.deepEqual([], sink.errors);
  appendFileSync(path, 'a\n');
  await tail.poll();
  assert.deepEqual(['a'], sink.lines);
  await done();
});

test('a descriptor budget: more files than it allows are all read, by read-and-close; no more than the budget is ever held, and put-off opens are counted', async () => {
  const d = tmpDir('tw-tail-');
  const budget = new FdBudget(3);
  const files = Array.from({ length: 12 }, (_, i) => join(d.path, `heartbeat_rank${i}.jsonl`));
  const sinks = files.map(() => new Collect());
  const tails = files.map((p, i) => new FileTail(p, sinks[i], { maxLineBytes: 1 << 20, startupBytes: 4096, startAtEnd: false, budget }));
  try {
    for (const [round, p] of files.flatMap((p) => [0, 1].map((r) => [r, p] as const))) appendFileSync(p, `r${round}\n`);
    // Every poll of every tail at once, as a sweep does; until each has read its two lines.
    for (let pass = 0; pass < 20 && sinks.some((s) => s.lines.length < 2); pass++) await Promise.all(tails.map((t) => t.poll()));
    assert.deepEqual(
      sinks.map(() => ['r0', 'r1']),
      sinks.map((s) => s.lines),
    );
    assert.equal(true, budget.peak <= 3, `peak ${budget.peak}`);
    assert.equal(true, budget.refused > 0, 'some opens had to wait');
    // Below the budget a tail keeps its file open, as without one; the count is exact.
    assert.equal(tails.filter((t) => t.isOpen).length, budget.held);
    assert.equal(true, budget.held < 3, `held ${budget.held}: a spent budget makes each tail close its file after reading`);
    // Appends after a read-and-close are read from where it left off, not twice.
    for (const p of files) appendFileSync(p, 'r2\n');
    for (let pass = 0; pass < 20 && sinks.some((s) => s.lines.length < 3); pass++) await Promise.all(tails.map((t) => t.poll()));
    assert.deepEqual(
      sinks.map(() => ['r0', 'r1', 'r2']),
      sinks.map((s) => s.lines),
    );
  } finally {
    for (const t of tails) await t.close();
    d.cleanup();
  }
});
