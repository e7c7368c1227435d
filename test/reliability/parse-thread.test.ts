// The parse thread (tail.parse-thread-bytes): a big read is parsed in batches, every other one
// on a second thread, and applied in file order. Each case compares the result with the same
// file read on the main thread only: the run state and every counter must be identical.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import type { RankState } from '../../src/state/rank.js';
import { FileTail } from '../../src/source/tail.js';
import { ParsePool } from '../../src/watch/parse-pool.js';
import { HeartbeatSink, type RankTable } from '../../src/watch/sinks.js';
import { Stats } from '../../src/watch/stats.js';
import { pyJson } from '../helpers/proc.js';
import { parseErrors, scratch, scrapeUntil, startTw, step } from '../helpers/reliability.js';

const MAX_LINE = 4096;
const PARAMS = { gateEntropyMin: 0.2, gateMaxThreshold: 0.9, gateCollapseFrac: 0.5, fetchStallRatio: 3, fetchWarmupN: 10 };

/** A seeded mix of everything a heartbeat file can hold, over several ranks (a legacy heartbeat.jsonl). */
function mixedFile(bytes: number, seed = 7): { text: Buffer; lines: number } {
  let x = seed;
  const rnd = () => (x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const parts: Buffer[] = [];
  let size = 0;
  let lines = 0;
  for (let stepN = 1; size < bytes; stepN++) {
    const rank = stepN % 4;
    const r = rnd();
    // runs of zero throughput and identical loss, so streaks depend on the order of lines
    const toks = stepN % 50 < 8 ? 0 : 1000 + Math.floor(rnd() * 100);
    const loss = stepN % 70 < 12 ? 2.5 : rnd() * 4;
    let line: string | Buffer;
    if (r < 0.7)
      line = pyJson({
        ts: 1.7e9 + stepN,
        rank,
        step: stepN,
        msg: 'progress',
        pid: 100 + rank,
        loss,
        toks_per_s: toks,
        grad_norm: stepN % 97 === 0 ? NaN : rnd(),
        dt_fetch_s: rnd() / 100,
        gpu_mem_alloc: 30000,
        gate_entropy_mean: rnd(),
      });
    else if (r < 0.8) line = pyJson({ ts: 1.7e9 + stepN, rank, step: stepN, msg: r < 0.75 ? 'beat' : 'watchdog_dump', note: 'say "NaN" \u00e9' });
    else if (r < 0.84) line = pyJson({ ts: 1.7e9 + stepN, rank, step: stepN, msg: 'progress', loss: NaN, toks_per_s: Infinity });
    else if (r < 0.87)
      line = '{"ts": 1.7e9, "rank": 1, "st' + pyJson({ ts: 1.7e9 + stepN, rank, step: stepN, msg: 'beat' }); // glued after a kill
    else if (r < 0.89) line = Buffer.concat([Buffer.from('{"ts": 1, "rank": 0, "step": 1, "msg": "'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
    else if (r < 0.91) line = r < 0.9 ? '' : '\r';
    else if (r < 0.93)
      line = pyJson({ ts: 1.7e9 + stepN, rank, step: stepN, msg: 'progress', pad: 'x'.repeat(MAX_LINE) }); // too long
    else if (r < 0.95) line = ['[1, 2]', '{"rank": 0, "step": 1}', '{"ts": "soon", "rank": 0, "step": 1}', 'not json'][stepN % 4]!;
    else line = pyJson({ ts: 1.7e9 + stepN, rank, step: stepN, msg: 'boot' });
    const b = Buffer.concat([typeof line === 'string' ? Buffer.from(line) : line, Buffer.from('\n')]);
    parts.push(b);
    size += b.length;
    lines++;
  }
  return { text: Buffer.concat(parts), lines };
}

/** Reads `path` from offset 0 through the real tail and sink; `pool` set → the parse thread takes part. */
async function readWhole(path: string, pool?: ParsePool): Promise<{ ranks: Map<number, RankState>; stats: Stats; touched: number }> {
  const stats = new Stats();
  let touched = 0;
  const table: RankTable = { ranks: new Map(), touched: () => touched++, params: PARAMS };
  const sink = new HeartbeatSink(table, stats, undefined, pool && { pool, minBytes: 1 });
  const tail = new FileTail(path, sink, { maxLineBytes: MAX_LINE, startupBytes: 1 << 20, startAtEnd: false });
  await tail.poll();
  await tail.close();
  return { ranks: table.ranks, stats, touched };
}

/** Counts the batches that really went to the thread. */
function counting(pool: ParsePool): { sent: number } {
  const c = { sent: 0 };
  const parse = pool.parse.bind(pool);
  pool.parse = (b) => {
    c.sent++;
    return parse(b);
  };
  return c;
}

test('backlog_parsed_on_two_threads: state, line and error counts equal a main-thread-only read', async (t) => {
  const dir = scratch(t);
  const path = join(dir, 'heartbeat.jsonl');
  const f = mixedFile(6 << 20);
  writeFileSync(path, f.text);
  const pool = new ParsePool();
  t.after(() => pool.close());
  const sent = counting(pool);
  const alone = await readWhole(path);
  const both = await readWhole(path, pool);
  assert.ok(sent.sent >= 8, `expected the thread to parse batches of a 6 MiB read, it got ${sent.sent}`);
  assert.equal(f.lines, alone.stats.linesRead + alone.stats.parseErrors.line_too_long);
  assert.equal(alone.stats.linesRead, both.stats.linesRead);
  assert.deepEqual(alone.stats.parseErrors, both.stats.parseErrors);
  assert.ok(
    alone.stats.parseErrors.invalid_json > 0 && alone.stats.parseErrors.invalid_utf8 > 0 && alone.stats.parseErrors.blank_line > 0,
    'the fixture exercises the error paths',
  );
  assert.deepEqual(alone.ranks, both.ranks);
  assert.ok(both.touched > 0);
});

test('parse_thread_dies_mid_backlog: its batches are parsed on the main thread, nothing lost or counted twice', async (t) => {
  const dir = scratch(t);
  const path = join(dir, 'heartbeat.jsonl');
  writeFileSync(path, mixedFile(4 << 20, 11).text);
  let failure = '';
  const pool = new ParsePool((d) => (failure = d));
  t.after(() => pool.close());
  const parse = pool.parse.bind(pool);
  let calls = 0;
  pool.parse = (b) => {
    const p = parse(b);
    // Kill the thread with batches in flight, as a crash would.
    if (++calls === 3) void (pool as unknown as { worker: Worker }).worker.terminate();
    return p;
  };
  const alone = await readWhole(path);
  const both = await readWhole(path, pool);
  assert.match(failure, /parse thread exited/);
  assert.equal(false, pool.usable);
  assert.equal(alone.stats.linesRead, both.stats.linesRead);
  assert.deepEqual(alone.stats.parseErrors, both.stats.parseErrors);
  assert.deepEqual(alone.ranks, both.ranks);
});

test('big_file_appears_while_running: the real process reads it through the parse thread and exports the last step', async (t) => {
  const root = scratch(t);
  const run = join(root, 'run-big');
  const tw = await startTw(t, ['--mode', 'alertmanager', '--root', root, '--tail.parse-thread-bytes', '65536', '--run.ttl-s', '31536000']);
  // Several MiB of healthy records appear at once: one read, parsed on both threads.
  const lines: string[] = [];
  let bytes = 0;
  let n = 0;
  while (bytes < 3 << 20) {
    n++;
    const l = pyJson({ ts: Date.now() / 1000 - 100 + n / 1e4, rank: 0, step: n, msg: 'progress', toks_per_s: 1000 + n, loss: 2 + (n % 7) / 10 });
    lines.push(l);
    bytes += l.length + 1;
  }
  lines.push('{"ts": 1, "rank": 0, "st'); // one bad line in the middle of nowhere, then the end
  lines.push(pyJson({ ts: Date.now() / 1000, rank: 0, step: n + 1, msg: 'beat' }));
  const { mkdirSync } = await import('node:fs');
  mkdirSync(run);
  writeFileSync(join(run, 'heartbeat_rank0.jsonl'), lines.join('\n') + '\n');
  const m = await scrapeUntil(tw.url, (s) => step(s, 'run-big', 0) === n + 1, 'the last step of the big file');
  assert.equal(n, m.get('trainwatch_records_total{run="run-big",rank="0",msg="progress"}'));
  assert.equal(1, parseErrors(m, 'invalid_json'));
  assert.doesNotMatch(tw.logs(), /parse thread failed/);
});
