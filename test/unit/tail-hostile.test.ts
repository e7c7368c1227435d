// FileTail against hostile files: FIFOs, symlinks, sparse files, descriptor limits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, copyFileSync, lstatSync, readdirSync, readlinkSync, renameSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ASYNC_IO, FileTail, SYNC_IO, type TailIO, type TailSink } from '../../src/source/tail.js';
import { requireBinary, tmpDir } from '../helpers/proc.js';

class Collect implements TailSink {
  lines: string[] = [];
  errors: string[] = [];
  details: string[] = [];
  read = 0;
  reset() {
    this.lines = [];
  }
  line(buf: Buffer, s: number, e: number) {
    this.lines.push(buf.toString('utf8', s, e));
  }
  error(reason: string, detail?: string) {
    this.errors.push(reason);
    this.details.push(detail ?? '');
  }
  wantsMoreHistory() {
    return false;
  }
  bytes(n: number) {
    this.read += n;
  }
}

function mkfifo(path: string): void {
  requireBinary('mkfifo', 'coreutils');
  assert.equal(0, spawnSync('mkfifo', [path]).status);
}

function setup(io: TailIO = SYNC_IO, opts: Partial<{ startupBytes: number; startAtEnd: boolean; idleMs: number }> = {}) {
  const d = tmpDir('tw-tailh-');
  const path = join(d.path, 'heartbeat_rank0.jsonl');
  const sink = new Collect();
  // idleMs -1: a file written a moment ago counts as quiet, so idle release can be seen at once
  // (not 0: Date.now() is whole milliseconds and mtime is not, so a file written within the
  // current millisecond would look written in the future).
  const tail = new FileTail(path, sink, { maxLineBytes: 1 << 20, startupBytes: 4096, startAtEnd: false, io, idleMs: -1, ...opts });
  return { d, path, sink, tail, done: async () => (await tail.close(), d.cleanup()) };
}

test('fifo_at_heartbeat_path: never read, counted once as not_regular_file while it stays; a regular file after it is read from 0', async () => {
  const { path, sink, tail, done } = setup();
  mkfifo(path);
  await tail.poll();
  await tail.poll();
  assert.deepEqual(['not_regular_file'], sink.errors);
  assert.match(sink.details[0], /FIFO, not a regular file.*Fix:/);
  spawnSync('rm', [path]);
  writeFileSync(path, 'a\nb\n');
  await tail.poll();
  assert.deepEqual(['a', 'b'], sink.lines);
  await done();
});

/**
 * The race, made certain: the tail's stat sees the regular file `a\n` at the path, then
 * `plant(dir, name)` creates something named `name` and it is renamed over the path before the open.
 */
async function raceStatAndOpen(base: TailIO, plant: (dir: string, name: string) => void): Promise<Collect> {
  const d = tmpDir('tw-tailh-');
  const path = join(d.path, 'heartbeat_rank0.jsonl');
  writeFileSync(path, 'a\n');
  plant(d.path, join(d.path, 'planted'));
  const io: TailIO = {
    stat: (p) => {
      const st = lstatSync(p);
      renameSync(join(d.path, 'planted'), p);
      return st;
    },
    open: (p) => base.open(p),
  };
  const sink = new Collect();
  const tail = new FileTail(path, sink, { maxLineBytes: 1 << 20, startupBytes: 4096, startAtEnd: false, io });
  try {
    await tail.poll();
    assert.equal(false, tail.isOpen);
  } finally {
    await tail.close();
    d.cleanup();
  }
  return sink;
}

for (const [name, base] of [
  ['direct system calls', SYNC_IO],
  ['the thread pool', ASYNC_IO],
] as const) {
  test(`fifo_swapped_in_between_stat_and_open (${name}): the open does not wait for a writer, and the FIFO is refused`, { timeout: 10_000 }, async () => {
    // Without O_NONBLOCK the open blocks until a writer opens the FIFO: never.
    const sink = await raceStatAndOpen(base, (_dir, planted) => mkfifo(planted));
    assert.deepEqual(['not_regular_file'], sink.errors);
    assert.deepEqual([], sink.lines);
  });
}

test('symlink_at_heartbeat_path: not followed, counted as not_regular_file; its target is never read', async () => {
  const { d, path, sink, tail, done } = setup();
  const outside = join(d.path, 'outside.jsonl');
  writeFileSync(outside, 'secret\n');
  symlinkSync(outside, path);
  await tail.poll();
  assert.deepEqual(['not_regular_file'], sink.errors);
  assert.deepEqual([], sink.lines);
  assert.equal(0, sink.read);
  await done();
});

test('symlink_swapped_in_between_stat_and_open: O_NOFOLLOW refuses it', async () => {
  const sink = await raceStatAndOpen(SYNC_IO, (dir, planted) => {
    writeFileSync(join(dir, 'outside.jsonl'), 'secret\n');
    symlinkSync(join(dir, 'outside.jsonl'), planted);
  });
  assert.deepEqual(['not_regular_file'], sink.errors);
  assert.deepEqual([], sink.lines);
});

test('a regular file replaced by a FIFO is drained first: its last lines are delivered before the FIFO is refused', async () => {
  const { d, path, sink, tail, done } = setup();
  appendFileSync(path, 'a\n');
  await tail.poll();
  appendFileSync(path, 'b\n');
  const fifo = join(d.path, 'fifo');
  mkfifo(fifo);
  renameSync(fifo, path);
  await tail.poll();
  assert.deepEqual(['a', 'b'], sink.lines);
  assert.deepEqual(['not_regular_file'], sink.errors);
  assert.equal(false, tail.isOpen);
  await done();
});

const TB = 2 ** 40;

test(
  'sparse_file_truncated_to_1TB: the record appended after the hole is read with a few small reads, and the hole is counted as sparse_skip',
  { timeout: 20_000 },
  async () => {
    const { path, sink, tail, done } = setup();
    appendFileSync(path, 'a\n');
    await tail.poll();
    truncateSync(path, TB); // a terabyte of zeros, none of them on disk
    appendFileSync(path, 'b\n');
    await tail.poll();
    appendFileSync(path, 'c\n');
    await tail.poll();
    assert.deepEqual(['a', 'b', 'c'], sink.lines);
    assert.equal(true, sink.errors.includes('sparse_skip'));
    assert.deepEqual(
      [],
      sink.errors.filter((e) => e !== 'sparse_skip'),
    );
    assert.equal(true, sink.read < 8 << 20, `read ${sink.read} bytes`);
    await done();
  },
);

test('sparse_file_without_data_after_the_hole: skipped to its end; a record appended later is read', { timeout: 20_000 }, async () => {
  const { path, sink, tail, done } = setup();
  appendFileSync(path, 'a\n');
  await tail.poll();
  truncateSync(path, TB);
  await tail.poll();
  appendFileSync(path, 'b\n');
  await tail.poll();
  assert.deepEqual(['a', 'b'], sink.lines);
  assert.equal(true, sink.read < 8 << 20, `read ${sink.read} bytes`);
  await done();
});

test(
  'sparse_file_at_startup: a 1 TB file present at startup is read from its last window, and the record after the zeros is delivered',
  { timeout: 20_000 },
  async () => {
    const { path, sink, tail, done } = setup(SYNC_IO, { startAtEnd: true });
    writeFileSync(path, 'old\n');
    truncateSync(path, TB);
    appendFileSync(path, 'new\n');
    await tail.poll();
    assert.deepEqual(['new'], sink.lines);
    assert.equal(true, sink.read < 8 << 20, `read ${sink.read} bytes`);
    await done();
  },
);

test('a short run of NUL bytes between records (a crash left zeros) is skipped and counted; the records around it are delivered', async () => {
  const { path, sink, tail, done } = setup();
  appendFileSync(path, Buffer.concat([Buffer.from('a\n'), Buffer.alloc(5000), Buffer.from('b\n')]));
  await tail.poll();
  appendFileSync(path, Buffer.concat([Buffer.from('par'), Buffer.alloc(10)]));
  await tail.poll();
  appendFileSync(path, 'c\n');
  await tail.poll();
  assert.deepEqual(['a', 'b', 'c'], sink.lines);
  assert.deepEqual(['sparse_skip', 'partial_line_dropped', 'sparse_skip'], sink.errors);
  await done();
});

/** Descriptors of this process open on `path` (readlink of /proc/self/fd/*). */
function fdsOn(path: string): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === path;
    } catch {
      return false;
    }
  }).length;
}

test('a file modified within idleMs keeps its descriptor however many polls find nothing new (it may be appended to and deleted before the next poll)', async () => {
  const { path, sink, tail, done } = setup(SYNC_IO, { idleMs: 60_000 });
  appendFileSync(path, 'a\n');
  for (let i = 0; i < 5; i++) await tail.poll();
  assert.equal(1, fdsOn(path));
  appendFileSync(path, 'b\n');
  rmSync(path);
  await tail.poll();
  assert.deepEqual(['a', 'b'], sink.lines);
  await done();
});

test('idle_file_releases_its_descriptor: after two polls with nothing new the fd is closed; an append reopens the same file and continues where it was', async () => {
  const { path, sink, tail, done } = setup();
  appendFileSync(path, 'a\npar');
  await tail.poll();
  assert.equal(1, fdsOn(path));
  await tail.poll();
  await tail.poll();
  assert.equal(0, fdsOn(path));
  assert.equal(false, tail.isOpen);
  await tail.poll(); // unchanged: not even opened
  assert.equal(false, tail.isOpen);
  appendFileSync(path, 'tial\nb\n');
  await tail.poll();
  assert.deepEqual(['a', 'partial', 'b'], sink.lines);
  assert.deepEqual([], sink.errors);
  await done();
});

/** A tail that read `first` and then released the file (three polls, the last two idle). */
async function released(first: string) {
  const t = setup();
  appendFileSync(t.path, first);
  for (let i = 0; i < 3; i++) await t.tail.poll();
  assert.equal(false, t.tail.isOpen);
  return t;
}

test('a released file rotated by rename is found beside the path by its identity and drained; the new file is read from 0', async () => {
  const { d, path, sink, tail, done } = await released('a\n');
  appendFileSync(path, 'b\n'); // written after our last poll, then rotated away at once
  writeFileSync(join(d.path, 'heartbeat_rank0.jsonl-20991231'), 'not ours\n'); // a sibling with another identity
  renameSync(path, `${path}.1`);
  appendFileSync(path, 'c\n');
  await tail.poll();
  assert.deepEqual(['a', 'b', 'c'], sink.lines);
  assert.deepEqual([], sink.errors);
  await done();
});

test('a released file truncated and regrown (copytruncate) is detected when reopened: the new content is read from 0', async () => {
  const { path, sink, tail, done } = await released('first-generation\n');
  truncateSync(path, 0);
  appendFileSync(path, 'second-generation-longer\n');
  await tail.poll();
  assert.deepEqual(['first-generation', 'second-generation-longer'], sink.lines);
  await done();
});

test('emfile_on_open: out of descriptors is a counted read error that names the fix, never "gone"; the next poll retries and reads the file', async () => {
  let fail = true;
  const io: TailIO = {
    stat: (p) => SYNC_IO.stat(p),
    open: (p) => {
      if (fail) throw Object.assign(new Error('EMFILE: too many open files, open'), { code: 'EMFILE' });
      return SYNC_IO.open(p);
    },
  };
  const { path, sink, tail, done } = setup(io);
  appendFileSync(path, 'a\n');
  await tail.poll();
  await tail.poll();
  assert.deepEqual(['read_error'], sink.errors); // once per failure, not once per poll
  assert.match(sink.details[0], /EMFILE.*Fix: raise the open-files limit/);
  fail = false;
  appendFileSync(path, 'b\n');
  await tail.poll();
  assert.deepEqual(['a', 'b'], sink.lines);
  await done();
});

for (const suffix of ['.1', '-20261130']) {
  test(`copytruncate_with_copy (${suffix}): records written after our last read and before the copy are read from the copy, then the truncated file from 0`, async () => {
    const { path, sink, tail, done } = setup();
    appendFileSync(path, 'a\nb\n');
    await tail.poll();
    appendFileSync(path, 'c\nd\npar'); // not read before the rotation: only the copy has them
    copyFileSync(path, path + suffix);
    truncateSync(path, 0);
    appendFileSync(path, 'e\n');
    await tail.poll();
    assert.deepEqual(['a', 'b', 'c', 'd', 'e'], sink.lines);
    assert.deepEqual(['partial_line_dropped'], sink.errors); // the writer's line cut by the copy
    await done();
  });
}

test('copytruncate with an unrelated sibling: a file that does not hold what we read last is not taken for the copy; the possible loss is counted', async () => {
  const { path, sink, tail, done } = setup();
  appendFileSync(path, 'a\nb\n');
  await tail.poll();
  appendFileSync(path, 'c\n');
  writeFileSync(`${path}.1`, 'x\ny\nz\nw\n'); // as long as our offset, other bytes
  truncateSync(path, 0);
  appendFileSync(path, 'e\n');
  await tail.poll();
  assert.deepEqual(['a', 'b', 'e'], sink.lines);
  assert.deepEqual(['copytruncate_lost'], sink.errors);
  await done();
});
