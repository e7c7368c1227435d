// The embedded watchdog end to end: a simulated trainer (scripts/sim_trainer.py) writes
// heartbeats the way HEARTBEAT.md describes and polls .HALT every step; the real trainwatch
// process detects each fault, writes the control files, and the trainer stops.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startSimTrainer, startTrainwatch, tmpDir, waitFor } from '../helpers/proc.js';

const FAST = {
  NSA_WATCH_HEARTBEAT_STALL_S: '2',
  NSA_WATCH_STARTUP_GRACE_S: '8',
  NSA_WATCH_FLATLINE_N: '3',
  NSA_WATCH_LOSS_FLATLINE_N: '5',
  NSA_WATCH_GRAD_ZERO_N: '3',
  NSA_WATCH_GATE_COLLAPSE_N: '3',
  NSA_WATCH_INTERVAL_S: '1',
  NSA_WATCH_STRAGGLER_STEPS: '15',
  TRAINWATCH_SWEEP_INTERVAL_S: '0.5',
};
const audit = (dir: string) => (existsSync(join(dir, '.trainwatch-audit.jsonl')) ? readFileSync(join(dir, '.trainwatch-audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>) : []);
const read = (dir: string, f: string) => (existsSync(join(dir, f)) ? readFileSync(join(dir, f), 'utf8') : undefined);

async function scenario(t: { after(fn: () => unknown): void }, simArgs: string[], env: Record<string, string> = {}, twArgs: string[] = ['--halt', '1']) {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const dir = join(d.path, 'run');
  const sim = startSimTrainer(['--dir', dir, '--ranks', '2', '--step-s', '0.03', '--quiet', ...simArgs]);
  t.after(() => sim.kill());
  const tw = await startTrainwatch(['--root', d.path, ...twArgs], { ...FAST, ...env });
  t.after(() => tw.stop());
  return { dir, sim, tw };
}

describe('each anomaly kind is caught, written once and, where it halts, stops the trainer', { concurrency: 3 }, () => {
  for (const kind of ['throughput_flatline', 'loss_flatline', 'zero_grad', 'gate_collapse', 'nonfinite_loss']) {
    test(`${kind}: .anomaly_type and .HALT are written and the trainer stops gracefully at its next step`, { timeout: 60_000 }, async (t) => {
      const { dir, sim } = await scenario(t, ['--fault', kind, '--fault-at', '15']);
      assert.equal(0, await sim.exited);
      assert.equal(`${kind}\n`, read(dir, '.anomaly_type'));
      assert.equal(`halt: ${kind}\n`, read(dir, '.HALT'));
      assert.equal(true, existsSync(join(dir, '.sim_stopped_rank0')) && existsSync(join(dir, '.sim_stopped_rank1')));
      const a = audit(dir);
      assert.deepEqual([kind], a.filter((e) => e.event === 'anomaly').map((e) => e.kind));
      assert.deepEqual(['anomaly_type:ok', 'details:ok', 'halt:ok'], a.filter((e) => e.event === 'action').map((e) => `${e.action}:${e.result}`));
      const details = JSON.parse(read(dir, '.anomaly.json')!) as Record<string, unknown>;
      assert.equal(kind, details.kind);
      assert.equal('run', details.run);
      assert.equal(({ throughput_flatline: 3, loss_flatline: 5, zero_grad: 3, gate_collapse: 3, nonfinite_loss: 1 } as Record<string, number>)[kind], details.threshold);
      if (kind === 'gate_collapse') {
        // .anomaly.json replaces the original's gate_collapse_details.json: the gate values and limits.
        assert.deepEqual([0.05, 0.5, 0.99, 0, 0.2, 0.9, 0.5], ['gate_entropy_mean', 'gate_entropy_min', 'gate_max_gate', 'gate_collapse_frac', 'threshold_gate_entropy_min', 'threshold_gate_max', 'threshold_gate_collapse_frac'].map((k) => details[k]));
        assert.equal(false, existsSync(join(dir, 'gate_collapse_details.json')));
      }
    });
  }

  test('heartbeat_stall: a hung trainer never reads .HALT, so escalation sends SIGUSR1 then SIGTERM, all audited', { timeout: 60_000 }, async (t) => {
    const { dir, sim } = await scenario(t, ['--fault', 'heartbeat_stall', '--fault-at', '15'], { NSA_WATCH_ESCALATE_S: '1', NSA_WATCH_ESCALATE_TERM_S: '1' });
    assert.notEqual(null, await sim.exited);
    assert.equal('heartbeat_stall\n', read(dir, '.anomaly_type'));
    assert.equal('halt: heartbeat_stall\n', read(dir, '.HALT'));
    const signals = audit(dir).filter((e) => e.signal).map((e) => `${e.signal}:${e.result}`);
    // Each verified trainer process: stacks, then stop; the result is the process gone, not kill()'s return.
    assert.deepEqual(['SIGUSR1:sent', 'SIGUSR1:sent', 'SIGTERM:sent', 'SIGTERM:sent', 'SIGTERM:exited', 'SIGTERM:exited'], signals);
    assert.equal(true, readdirSync(dir).some((f) => f.startsWith('stackdump_')));
  });

  test('a hung trainer that keeps writing watchdog_dump records is caught as heartbeat_stall', { timeout: 60_000 }, async (t) => {
    const { dir, tw } = await scenario(t, ['--fault', 'watchdog_dump', '--fault-at', '15', '--dump-every-s', '0.2']);
    await waitFor(() => read(dir, '.anomaly_type'), '.anomaly_type');
    assert.equal('heartbeat_stall\n', read(dir, '.anomaly_type'));
    await waitFor(async () => (await (await fetch(tw.url + '/metrics')).text()).includes('msg="watchdog_dump"'), 'watchdog_dump records counted');
  });

  test('fetch_stall only warns: .anomaly_type is written, .HALT is not, the trainer keeps going', { timeout: 60_000 }, async (t) => {
    const { dir, sim } = await scenario(t, ['--fault', 'fetch_stall', '--fault-at', '20']);
    await waitFor(() => read(dir, '.anomaly_type'), '.anomaly_type');
    assert.equal('fetch_stall\n', read(dir, '.anomaly_type'));
    assert.equal(undefined, read(dir, '.HALT'));
    assert.equal(null, sim.proc.exitCode);
  });

  test('a straggling rank is reported as straggler without halting the run', { timeout: 60_000 }, async (t) => {
    const { dir } = await scenario(t, ['--fault', 'straggler', '--fault-at', '5', '--fault-rank', '1']);
    await waitFor(() => read(dir, '.anomaly_type') === 'straggler\n', 'straggler');
    assert.equal(1, audit(dir).find((e) => e.event === 'anomaly')!.rank);
    assert.equal(undefined, read(dir, '.HALT'));
  });

  test('a crashed trainer (pid gone, no .HALT) is reported as trainer_crash when crash detection is on', { timeout: 60_000 }, async (t) => {
    const { dir, sim } = await scenario(t, ['--fault', 'crash', '--fault-at', '10'], { NSA_WATCH_CRASH_DETECT: '1', NSA_WATCH_HEARTBEAT_STALL_S: '60' });
    await sim.exited;
    await waitFor(() => read(dir, '.anomaly_type'), '.anomaly_type');
    assert.equal('trainer_crash\n', read(dir, '.anomaly_type'));
  });
});

test('a healthy multi-rank run with a slow loader start is never halted', { timeout: 60_000 }, async (t) => {
  // The loader takes 3 s after boot, longer than the 2 s stall threshold: the startup grace covers it.
  const { dir, sim, tw } = await scenario(t, ['--ranks', '4', '--boot-s', '3', '--steps', '120']);
  assert.equal(0, await sim.exited);
  // The last appends may still be inside the event-coalescing window.
  await waitFor(async () => (await (await fetch(tw.url + '/metrics')).text()).includes('trainwatch_step{run="run",rank="3"} 120'), 'rank 3 at step 120');
  assert.equal(undefined, read(dir, '.anomaly_type'));
  assert.equal(undefined, read(dir, '.HALT'));
  assert.equal(0, audit(dir).length);
});

test('once per episode: a deleted .anomaly_type is not rewritten while the episode lasts; a restart repeats nothing', { timeout: 60_000 }, async (t) => {
  const { dir, sim, tw } = await scenario(t, ['--fault', 'throughput_flatline', '--fault-at', '10'], {}, ['--halt', '0']);
  await waitFor(() => read(dir, '.anomaly_type'), '.anomaly_type');
  rmSync(join(dir, '.anomaly_type')); // the operator's handler did its job
  await new Promise((r) => setTimeout(r, 1500)); // more zero-throughput records and a safety sweep
  assert.equal(undefined, read(dir, '.anomaly_type'));
  assert.equal(undefined, read(dir, '.HALT'));
  await tw.stop('SIGKILL');
  sim.kill();
  const tw2 = await startTrainwatch(['--root', join(dir, '..'), '--halt', '0'], FAST);
  t.after(() => tw2.stop());
  await waitFor(async () => (await (await fetch(tw2.url + '/metrics')).text()).includes('anomaly_type="throughput_flatline"} 1'), 'the episode seen again');
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(1, audit(dir).filter((e) => e.event === 'anomaly').length);
  assert.equal(undefined, read(dir, '.anomaly_type'));
});

test('a restart during a long anomaly streak raises no false stall or straggler, and continues the open episode', { timeout: 90_000 }, async (t) => {
  // The streak is longer than the startup window, so the restart re-reads a doubling window.
  // 500 steps (1 s at this pace) is far more than CPU contention skews two ranks, and far less
  // than the whole-window skew that reading one rank's file before its peer's used to show.
  const { dir, tw } = await scenario(t, ['--fault', 'nonfinite_loss', '--fault-at', '5', '--step-s', '0.002'], { NSA_WATCH_HEARTBEAT_STALL_S: '2', NSA_WATCH_STRAGGLER_STEPS: '500' }, ['--halt', '0', '--tail.startup-bytes', '16384']);
  await waitFor(() => read(dir, '.anomaly_type'), '.anomaly_type');
  await waitFor(() => statSync(join(dir, 'heartbeat_rank1.jsonl')).size > 400_000, 'a long streak on disk', 60_000, 100);
  await tw.stop('SIGKILL');
  const tw2 = await startTrainwatch(['--root', join(dir, '..'), '--halt', '0', '--tail.startup-bytes', '16384'], { ...FAST, NSA_WATCH_HEARTBEAT_STALL_S: '2', NSA_WATCH_STRAGGLER_STEPS: '500' });
  t.after(() => tw2.stop());
  const m = await waitFor(async () => {
    const text = await (await fetch(tw2.url + '/metrics')).text();
    return text.includes('anomaly_type="nonfinite_loss"} 1') ? text : undefined;
  }, 'the streak seen again after the restart');
  const streak = Number(/trainwatch_nonfinite_count\{run="run",rank="1"\} (\d+)/.exec(m)![1]);
  assert.equal(true, streak > 100, `streak ${streak} rebuilt across the window`);
  await new Promise((r) => setTimeout(r, 1000));
  assert.deepEqual(['nonfinite_loss'], audit(dir).filter((e) => e.event === 'anomaly').map((e) => e.kind));
  assert.equal(0, audit(dir).filter((e) => e.event === 'resolved').length);
});
