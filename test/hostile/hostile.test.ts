// The hostile-input suite (issue 11, "Done when"): ONE real trainwatch watches many run dirs.
// Each hostile case happens in its own run dir; after it, a fresh control run on the same
// trainwatch gets a NaN loss and must be halted, and /healthz must answer. The cases pile up in
// the one process (a FIFO left by one case is still there during the next). At the end nothing
// outside the runs dir was written (marker + find -newer), and an outside file's content never
// reached /api/status. Speeds are not asserted here: they belong in bench/.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pyJson, requireBinary, waitFor } from '../helpers/proc.js';
import { assertServing, beat, killAtEnd, record, scratch, sleep, startFifoSwapper, startTw, type Tw } from '../helpers/reliability.js';

const AUDIT = '.trainwatch-audit.jsonl';
/** A string that only the outside file holds: it must never be served. */
const MARKER = 'OUTSIDE-MARKER-7f3a9c';

/** A NaN loss record without a pid, in the trainer's spelling (bare NaN token). */
const nanRecord = () => pyJson({ ts: Date.now() / 1000, rank: 0, step: 2, msg: 'progress', loss: NaN }) + '\n';

/** /healthz answers 200 (a blocked event loop never answers: the 5 s abort trips). */
async function healthy(tw: Tw): Promise<void> {
  const r = await fetch(`${tw.url}/healthz`, { signal: AbortSignal.timeout(5000) });
  assert.equal(200, r.status);
}

/** One hostile case: `setup` builds it in `dir` (a fresh run dir under runs/). */
interface Case {
  name: string;
  setup(dir: string, ctx: { tw: Tw; outside: string; t: Parameters<typeof killAtEnd>[0] }): Promise<void> | void;
}

const CASES: Case[] = [
  {
    name: 'fifo_renamed_over_heartbeat_in_a_loop',
    setup: async (dir, { tw, t }) => {
      requireBinary('python3', 'python3');
      beat(dir, 0, 1);
      // Another process alternates a FIFO and a regular file at the path as fast as it can, so
      // that FIFOs land between a stat and an open; /healthz is asked all along.
      const swapper = startFifoSwapper(t, join(dir, 'heartbeat_rank0.jsonl'), 1500, 'now');
      while (swapper.proc.exitCode === null) {
        await healthy(tw);
        await sleep(100);
      }
      assert.equal(0, await swapper.done);
      // And one FIFO that stays there for the rest of the suite.
      assert.equal(
        0,
        spawnSync('python3', [
          '-c',
          'import os,sys; os.mkfifo(sys.argv[1]); os.rename(sys.argv[1], sys.argv[2])',
          join(dir, 'x.fifo'),
          join(dir, 'heartbeat_rank0.jsonl'),
        ]).status,
      );
    },
  },
  {
    name: 'fifo_audit_log',
    setup: (dir) => {
      assert.equal(0, spawnSync('mkfifo', [join(dir, AUDIT)]).status);
      // The run is halted too, so the audit log is both read and appended to.
      writeFileSync(join(dir, 'heartbeat_rank0.jsonl'), record(0, 1) + nanRecord());
    },
  },
  {
    name: 'twenty_thousand_ranks_in_one_heartbeat_file',
    setup: (dir) => {
      let s = '';
      for (let r = 0; r < 20_000; r++) s += record(r, 1);
      writeFileSync(join(dir, 'heartbeat_rank0.jsonl'), s);
    },
  },
  {
    name: 'ts_in_milliseconds',
    setup: (dir) => {
      // 1000 times too large a ts: a timestamp some 50,000 years ahead.
      appendFileSync(join(dir, 'heartbeat_rank0.jsonl'), pyJson({ ts: Date.now(), rank: 0, step: 1, msg: 'progress', loss: 2.5 }) + '\n');
    },
  },
  {
    name: 'audit_log_symlink_to_an_outside_file',
    setup: (dir, { outside }) => {
      symlinkSync(join(outside, 'audit.jsonl'), join(dir, AUDIT));
      writeFileSync(join(dir, 'heartbeat_rank0.jsonl'), record(0, 1) + nanRecord());
    },
  },
  {
    name: 'dangling_halt_symlink',
    setup: (dir, { outside }) => {
      // It points at a path outside that does not exist: following it would create that file.
      symlinkSync(join(outside, 'created-through-halt'), join(dir, '.HALT'));
      writeFileSync(join(dir, 'heartbeat_rank0.jsonl'), record(0, 1) + nanRecord());
    },
  },
  {
    name: 'run_dir_name_not_utf8',
    setup: (dir) => {
      const bad = Buffer.concat([Buffer.from(dir), Buffer.from([0xff, 0xfe])]);
      mkdirSync(bad);
      appendFileSync(Buffer.concat([bad, Buffer.from('/heartbeat_rank0.jsonl')]), record(0, 1));
    },
  },
  {
    name: 'sparse_1TB_heartbeat_file',
    setup: (dir) => {
      beat(dir, 0, 1);
      truncateSync(join(dir, 'heartbeat_rank0.jsonl'), 2 ** 40); // truncate -s 1T
      beat(dir, 0, 2);
    },
  },
  {
    name: 'huge_line_without_newline',
    setup: (dir) => {
      beat(dir, 0, 1);
      // 4 MiB, beyond tail.max-line-bytes (1 MiB), and never ended.
      appendFileSync(join(dir, 'heartbeat_rank0.jsonl'), '{"ts": 1, "rank": 0, "pad": "' + 'x'.repeat(4 << 20));
    },
  },
];

describe('hostile inputs next to a control run, on one trainwatch', () => {
  test(
    'every hostile case leaves the control run halted and /healthz answering, and nothing outside the runs dir is written or served',
    { timeout: 300_000 },
    async (t) => {
      requireBinary('mkfifo', 'coreutils');
      const base = scratch(t, 'tw-hostile-');
      const runs = join(base, 'runs');
      const outside = join(base, 'outside');
      mkdirSync(runs);
      mkdirSync(outside);
      writeFileSync(join(outside, 'audit.jsonl'), JSON.stringify({ ts: 1, event: 'acted', episode: MARKER, run: MARKER, kind: MARKER }) + '\n');
      const marker = join(outside, '.marker');
      writeFileSync(marker, '');
      const tw = await startTw(t, ['--root', runs, '--halt', '1', '--tail.sweep-interval-s', '0.5'], { env: { NSA_WATCH_HEARTBEAT_STALL_S: '604800' } });
      for (const c of CASES) {
        const dir = join(runs, c.name);
        mkdirSync(dir);
        const t0 = Date.now();
        await c.setup(dir, { tw, outside, t });
        const control = join(runs, `control-${c.name}`);
        mkdirSync(control);
        appendFileSync(join(control, 'heartbeat_rank0.jsonl'), nanRecord());
        await waitFor(() => existsSync(join(control, '.HALT')), `the control run to be halted after ${c.name}`, 60_000);
        await healthy(tw);
        t.diagnostic(`${c.name}: control halted ${Date.now() - t0} ms after the case began (a figure, not asserted)`);
        const status = await (await fetch(`${tw.url}/api/status`, { signal: AbortSignal.timeout(5000) })).text();
        assert.equal(false, status.includes(MARKER), `after ${c.name}: /api/status serves the outside file's content`);
      }
      const written = spawnSync('find', [outside, '-newer', marker], { encoding: 'utf8' });
      assert.equal(0, written.status, written.stderr);
      assert.equal('', written.stdout, 'files written outside the runs dir');
      await assertServing(tw);
    },
  );
});
