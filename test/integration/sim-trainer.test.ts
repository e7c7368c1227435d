// scripts/sim_trainer.py itself: it must write and react as the real trainer does
// (HEARTBEAT.md, "Who writes what, rank by rank"), or every end-to-end test built on it lies.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startSimTrainer, teardown, tmpDir, waitFor } from '../helpers/proc.js';

type Rec = { ts: number; msg: string; step: number; pid: number; rank: number; grad_norm?: number | null; path?: string };
const records = (dir: string, rank: number): Rec[] =>
  existsSync(join(dir, `heartbeat_rank${rank}.jsonl`))
    ? readFileSync(join(dir, `heartbeat_rank${rank}.jsonl`), 'utf8')
        .split('\n')
        .slice(0, -1) // whole lines only: the trainer may be writing the last one right now
        .map((l) => JSON.parse(l.replace(/\bNaN\b/g, 'null')) as Rec)
    : [];
const read = (dir: string, f: string) => (existsSync(join(dir, f)) ? readFileSync(join(dir, f), 'utf8') : undefined);

function setup(t: Parameters<typeof teardown>[0]) {
  const later = teardown(t);
  const d = tmpDir('tw-sim-');
  later(() => d.cleanup());
  const dir = join(d.path, 'run');
  const sim = (args: string[]) => {
    const s = startSimTrainer(['--dir', dir, '--quiet', ...args]);
    later(() => s.kill());
    return s;
  };
  return { dir, sim };
}

describe('the simulated trainer', { concurrency: 3 }, () => {
  test(
    'default layout: rank 0 writes progress and step_end at step 1 and every log_every steps, rank 1 only boot, loader and its watchdog dumps; no final record',
    { timeout: 30_000 },
    async (t) => {
      const { dir, sim } = setup(t);
      const s = sim(['--ranks', '2', '--step-s', '0.02', '--steps', '60', '--log-every', '10', '--wd-check-s', '0.1', '--wd-stall-s', '0.3']);
      assert.equal(0, await s.exited, s.output());
      const r0 = records(dir, 0);
      assert.deepEqual(
        ['boot', 'fineweb_loader_ready'],
        r0.slice(0, 2).map((r) => r.msg),
      );
      assert.deepEqual(
        [1, 10, 20, 30, 40, 50, 60],
        r0.filter((r) => r.msg === 'progress').map((r) => r.step),
      );
      assert.deepEqual(
        [1, 10, 20, 30, 40, 50, 60],
        r0.filter((r) => r.msg === 'step_end').map((r) => r.step),
      );
      assert.equal('step_end', r0.at(-1)!.msg);
      const r1 = records(dir, 1);
      assert.deepEqual(
        ['boot', 'fineweb_loader_ready'],
        r1.slice(0, 2).map((r) => r.msg),
      );
      assert.deepEqual(
        [],
        r1.slice(2).filter((r) => r.msg !== 'watchdog_dump'),
      );
      assert.equal(true, r1.length > 2, 'a healthy silent rank dumps, as the real watchdog thread does');
      assert.equal(0, r1.at(-1)!.step);
      assert.equal('step,loss,lr,toks_per_s\n1,', read(dir, 'training.csv')!.slice(0, 26));
    },
  );

  test('--beats adds a beat per step on every rank', { timeout: 30_000 }, async (t) => {
    const { dir, sim } = setup(t);
    assert.equal(0, await sim(['--ranks', '3', '--step-s', '0.01', '--steps', '20', '--beats']).exited);
    for (const r of [0, 1, 2]) assert.equal(20, records(dir, r).filter((x) => x.msg === 'beat').length);
  });

  test('.HALT: every rank stops at the same step and exits 0', { timeout: 30_000 }, async (t) => {
    const { dir, sim } = setup(t);
    const s = sim(['--ranks', '3', '--step-s', '0.02']);
    await waitFor(() => records(dir, 0).some((r) => r.msg === 'progress' && r.step >= 10), 'step 10');
    writeFileSync(join(dir, '.HALT'), 'halt: test\n');
    assert.equal(0, await s.exited);
    const steps = [0, 1, 2].map((r) => read(dir, `.sim_stopped_rank${r}`));
    assert.equal(1, new Set(steps).size, String(steps));
  });

  test('a non-finite loss aborts the run as the real trainer does: nan_loss in .anomaly_type and .HALT, no NaN logged', { timeout: 30_000 }, async (t) => {
    const { dir, sim } = setup(t);
    assert.equal(0, await sim(['--ranks', '2', '--step-s', '0.01', '--fault', 'nonfinite_loss', '--fault-at', '5']).exited);
    assert.equal('nan_loss\n', read(dir, '.anomaly_type'));
    assert.equal('halt: nan_loss\n', read(dir, '.HALT'));
    assert.equal(false, read(dir, 'heartbeat_rank0.jsonl')!.includes('NaN'));
  });

  test('nonfinite_grad logs grad_norm NaN and trains on', { timeout: 30_000 }, async (t) => {
    const { dir, sim } = setup(t);
    assert.equal(0, await sim(['--ranks', '2', '--step-s', '0.01', '--steps', '10', '--fault', 'nonfinite_grad', '--fault-at', '5']).exited);
    assert.deepEqual(
      [6, 7, 8, 9, 10].map(() => null),
      records(dir, 0)
        .filter((r) => r.msg === 'progress' && r.step >= 6)
        .map((r) => r.grad_norm),
    );
  });

  test('SIGTERM and SIGUSR1 dump stacks and the trainer runs on to its end', { timeout: 30_000 }, async (t) => {
    const { dir, sim } = setup(t);
    const s = sim(['--ranks', '2', '--step-s', '0.02', '--steps', '150']);
    await waitFor(() => records(dir, 1).length >= 2, 'both ranks booted');
    const pids = [0, 1].map((r) => records(dir, r)[0].pid);
    for (const pid of pids) process.kill(pid, 'SIGTERM');
    s.kill('SIGUSR1');
    assert.equal(0, await s.exited);
    assert.equal(
      true,
      readdirSync(dir).some((f) => /^stackdump_\d+\.txt$/.test(f)),
    );
    assert.equal(150, records(dir, 0).at(-1)!.step);
  });

  test('a frozen rank 1 blocks rank 0 at the next step; only rank 0 keeps dumping', { timeout: 30_000 }, async (t) => {
    const { dir, sim } = setup(t);
    sim(['--ranks', '2', '--step-s', '0.02', '--fault', 'frozen', '--fault-at', '10', '--wd-check-s', '0.1', '--wd-stall-s', '0.3']);
    await waitFor(() => records(dir, 0).filter((r) => r.msg === 'watchdog_dump').length >= 3, 'rank 0 dumping');
    assert.equal(9, Math.max(...records(dir, 0).map((r) => r.step)));
    const frozenAt = records(dir, 0).find((r) => r.msg === 'watchdog_dump')!.ts;
    assert.deepEqual(
      [],
      records(dir, 1).filter((r) => r.ts > frozenAt),
    );
  });

  test('a crashing rank exits 1 without a record and the launcher ends the other ranks', { timeout: 30_000 }, async (t) => {
    const { dir, sim } = setup(t);
    assert.equal(1, await sim(['--ranks', '3', '--step-s', '0.01', '--fault', 'crash', '--fault-rank', '1', '--fault-at', '10']).exited);
    assert.equal(9, Math.max(...records(dir, 0).map((r) => r.step)));
  });
});
