// The embedded watchdog end to end: a simulated trainer (scripts/sim_trainer.py) writes
// heartbeats the way HEARTBEAT.md describes and polls .HALT every step; the real trainwatch
// process detects each fault, writes the control files, and the trainer stops.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { scrape, startSimTrainer, startTrainwatch, tmpDir, waitFor } from '../helpers/proc.js';
import { beat, records, scrapeUntil, sweepsPassed } from '../helpers/reliability.js';

// Fast everywhere but the stall: a live Python trainer that the machine does not schedule for a
// few seconds has genuinely stalled, so only the stall scenarios use a short threshold (where a
// scheduling gap gives the same verdict).
const STALL_S = '2';
const FAST = {
  NSA_WATCH_HEARTBEAT_STALL_S: '600',
  NSA_WATCH_STARTUP_GRACE_S: '8',
  NSA_WATCH_FLATLINE_N: '3',
  NSA_WATCH_LOSS_FLATLINE_N: '5',
  NSA_WATCH_GRAD_ZERO_N: '3',
  NSA_WATCH_GATE_COLLAPSE_N: '3',
  NSA_WATCH_INTERVAL_S: '1',
  NSA_WATCH_STRAGGLER_STEPS: '15',
  TRAINWATCH_SWEEP_INTERVAL_S: '0.5',
};
const audit = (dir: string) =>
  existsSync(join(dir, '.trainwatch-audit.jsonl'))
    ? readFileSync(join(dir, '.trainwatch-audit.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>)
    : [];
const read = (dir: string, f: string) => (existsSync(join(dir, f)) ? readFileSync(join(dir, f), 'utf8') : undefined);

async function scenario(t: { after(fn: () => unknown): void }, simArgs: string[], env: Record<string, string> = {}, twArgs: string[] = ['--halt', '1']) {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const dir = join(d.path, 'run');
  // Started from the directory that holds the run (startSimTrainer's default), as the real trainer runs from its checkout.
  const sim = startSimTrainer(['--dir', dir, '--ranks', '2', '--step-s', '0.03', '--quiet', ...simArgs]);
  t.after(() => sim.kill());
  const tw = await startTrainwatch(['--root', d.path, ...twArgs], { ...FAST, ...env });
  t.after(() => tw.stop());
  return { dir, sim, tw };
}

describe('each anomaly kind is caught, written once and, where it halts, stops the trainer', { concurrency: 3 }, () => {
  for (const kind of ['throughput_flatline', 'loss_flatline', 'zero_grad', 'gate_collapse', 'nonfinite_loss']) {
    test(`${kind}: .anomaly_type and .HALT are written and the trainer stops gracefully at its next step`, { timeout: 60_000 }, async (t) => {
      // The trainer aborts by itself on a NaN loss (nan_loss); a NaN grad_norm is what it logs.
      const { dir, sim } = await scenario(t, ['--fault', kind === 'nonfinite_loss' ? 'nonfinite_grad' : kind, '--fault-at', '15']);
      assert.equal(0, await sim.exited);
      assert.equal(`${kind}\n`, read(dir, '.anomaly_type'));
      assert.equal(`halt: ${kind}\n`, read(dir, '.HALT'));
      assert.equal(true, existsSync(join(dir, '.sim_stopped_rank0')) && existsSync(join(dir, '.sim_stopped_rank1')));
      const a = audit(dir);
      assert.deepEqual(
        [kind],
        a.filter((e) => e.event === 'anomaly').map((e) => e.kind),
      );
      assert.deepEqual(
        ['anomaly_type:ok', 'details:ok', 'halt:ok'],
        a.filter((e) => e.event === 'action').map((e) => `${e.action}:${e.result}`),
      );
      const details = JSON.parse(read(dir, '.anomaly.json')!) as Record<string, unknown>;
      assert.equal(kind, details.kind);
      assert.equal('run', details.run);
      assert.equal(
        ({ throughput_flatline: 3, loss_flatline: 5, zero_grad: 3, gate_collapse: 3, nonfinite_loss: 1 } as Record<string, number>)[kind],
        details.threshold,
      );
      if (kind === 'gate_collapse') {
        // .anomaly.json replaces the original's gate_collapse_details.json: the gate values and limits.
        assert.deepEqual(
          [0.05, 0.5, 0.99, 0, 0.2, 0.9, 0.5],
          [
            'gate_entropy_mean',
            'gate_entropy_min',
            'gate_max_gate',
            'gate_collapse_frac',
            'threshold_gate_entropy_min',
            'threshold_gate_max',
            'threshold_gate_collapse_frac',
          ].map((k) => details[k]),
        );
        assert.equal(false, existsSync(join(dir, 'gate_collapse_details.json')));
      }
    });
  }

  test(
    'heartbeat_stall: a hung trainer never reads .HALT and catches SIGTERM, so escalation sends SIGUSR1, SIGTERM, then SIGKILL, all audited',
    { timeout: 60_000 },
    async (t) => {
      const { dir, sim } = await scenario(t, ['--fault', 'heartbeat_stall', '--fault-at', '15'], {
        NSA_WATCH_HEARTBEAT_STALL_S: STALL_S,
        NSA_WATCH_ESCALATE_S: '1',
        NSA_WATCH_ESCALATE_TERM_S: '1',
        NSA_WATCH_ESCALATE_KILL_S: '1',
      });
      assert.notEqual(null, await sim.exited);
      assert.equal('heartbeat_stall\n', read(dir, '.anomaly_type'));
      assert.equal('halt: heartbeat_stall\n', read(dir, '.HALT'));
      const signals = audit(dir).filter((e) => e.signal);
      assert.deepEqual(['SIGKILL', 'SIGTERM', 'SIGUSR1'], [...new Set(signals.filter((e) => e.result === 'sent').map((e) => e.signal))].sort());
      await waitFor(() => audit(dir).filter((e) => e.signal && e.result === 'exited').length === 2, 'both ranks seen gone');
      assert.equal(
        true,
        readdirSync(dir).some((f) => f.startsWith('stackdump_')),
      );
    },
  );

  test('a hung trainer that keeps writing watchdog_dump records is caught as heartbeat_stall', { timeout: 60_000 }, async (t) => {
    const { dir, tw } = await scenario(t, ['--fault', 'watchdog_dump', '--fault-at', '15', '--dump-every-s', '0.2'], { NSA_WATCH_HEARTBEAT_STALL_S: STALL_S });
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
    const { dir } = await scenario(t, ['--fault', 'straggler', '--fault-at', '5', '--fault-rank', '1', '--beats']);
    await waitFor(() => read(dir, '.anomaly_type') === 'straggler\n', 'straggler');
    assert.equal(1, audit(dir).find((e) => e.event === 'anomaly')!.rank);
    assert.equal(undefined, read(dir, '.HALT'));
  });

  test('a crashed trainer (pid gone, no .HALT) is reported as trainer_crash when crash detection is on', { timeout: 60_000 }, async (t) => {
    const { dir, sim } = await scenario(t, ['--fault', 'crash', '--fault-at', '10'], {
      NSA_WATCH_CRASH_DETECT: '1',
      NSA_WATCH_HEARTBEAT_STALL_S: '60',
      NSA_WATCH_PID_CHECK: 'on',
    }); // it may crash before trainwatch sees it alive
    await sim.exited;
    await waitFor(() => read(dir, '.anomaly_type'), '.anomaly_type');
    assert.equal('trainer_crash\n', read(dir, '.anomaly_type'));
  });
});

test(
  'a healthy multi-rank run is never halted, and while its loader starts the startup grace is the stall threshold in force',
  { timeout: 60_000 },
  async (t) => {
    const { dir, sim, tw } = await scenario(t, ['--ranks', '4', '--boot-s', '3', '--steps', '120', '--beats'], {
      NSA_WATCH_HEARTBEAT_STALL_S: '30',
      NSA_WATCH_STARTUP_GRACE_S: '900',
    });
    // Between boot and the first progress record the threshold is raised to the grace (the
    // detector's use of it is unit-tested with a fake clock in state-detect.test.ts). A second
    // run that only booted shows it without racing the trainer's loader.
    const booting = join(dir, '..', 'booting');
    mkdirSync(booting);
    beat(booting, 0, 0, 'boot');
    const threshold = (m: Map<string, number>, run: string) => m.get(`trainwatch_heartbeat_stall_threshold_seconds{run="${run}",rank="0"}`);
    assert.equal(
      900,
      threshold(await scrapeUntil(tw.url, (m) => records(m, 'booting', 0, 'boot') === 1, 'the boot record'), 'booting'),
      'between boot and the first progress record',
    );
    assert.equal(0, await sim.exited);
    // The last record of every rank is counted: every record has been evaluated.
    const m = await scrapeUntil(tw.url, (m) => [0, 1, 2, 3].every((r) => m.get(`trainwatch_step{run="run",rank="${r}"}`) === 120), 'every rank at step 120');
    assert.equal(30, threshold(m, 'run'), 'after the first progress record');
    assert.equal(undefined, read(dir, '.anomaly_type'));
    assert.equal(undefined, read(dir, '.HALT'));
    assert.equal(0, audit(dir).length);
  },
);

test('once per episode: a deleted .anomaly_type is not rewritten while the episode lasts; a restart repeats nothing', { timeout: 90_000 }, async (t) => {
  // Crash detection on (the trainer stays alive): sweepsPassed can then see sweeps go by.
  const { dir, tw } = await scenario(t, ['--fault', 'throughput_flatline', '--fault-at', '10'], { NSA_WATCH_CRASH_DETECT: '1' }, ['--halt', '0']);
  const flat = (m: Map<string, number>) => m.get('trainwatch_throughput_flatline_count{run="run",rank="0"}') ?? 0;
  await waitFor(() => read(dir, '.anomaly_type'), '.anomaly_type');
  rmSync(join(dir, '.anomaly_type')); // the operator's handler did its job
  // More zero-throughput records, counted, and safety sweeps, seen.
  const before = flat(await scrape(tw.url));
  await scrapeUntil(tw.url, (m) => flat(m) >= before + 5, 'more zero-throughput records');
  await sweepsPassed(tw.url, join(dir, '..'), 2);
  assert.equal(undefined, read(dir, '.anomaly_type'));
  assert.equal(undefined, read(dir, '.HALT'));
  await tw.stop('SIGKILL');
  // Restarted while the trainer goes on with the same episode.
  const tw2 = await startTrainwatch(['--root', join(dir, '..'), '--halt', '0'], { ...FAST, NSA_WATCH_CRASH_DETECT: '1' });
  t.after(() => tw2.stop());
  await waitFor(async () => (await (await fetch(tw2.url + '/metrics')).text()).includes('anomaly_type="throughput_flatline"} 1'), 'the episode seen again');
  const seen = flat(await scrape(tw2.url));
  await scrapeUntil(tw2.url, (m) => flat(m) >= seen + 5, 'more zero-throughput records after the restart');
  await sweepsPassed(tw2.url, join(dir, '..'), 2);
  assert.equal(1, audit(dir).filter((e) => e.event === 'anomaly').length);
  assert.equal(undefined, read(dir, '.anomaly_type'));
});

test('a restart during a long anomaly streak raises no false stall or straggler, and continues the open episode', { timeout: 90_000 }, async (t) => {
  // The streak is longer than the startup window, so the restart re-reads a doubling window.
  // A 20 s stall threshold: no scheduling gap of the live trainer trips it, but a restart that
  // judged the run by the oldest records of its window would.
  // 500 steps (1 s at this pace) is far more than CPU contention skews two ranks, and far less
  // than the whole-window skew that reading one rank's file before its peer's used to show.
  const { dir, tw } = await scenario(
    t,
    ['--fault', 'nonfinite_grad', '--fault-at', '5', '--step-s', '0.002'],
    { NSA_WATCH_HEARTBEAT_STALL_S: '20', NSA_WATCH_STRAGGLER_STEPS: '500', NSA_WATCH_CRASH_DETECT: '1' },
    ['--halt', '0', '--tail.startup-bytes', '16384'],
  );
  await waitFor(() => read(dir, '.anomaly_type'), '.anomaly_type');
  await waitFor(() => statSync(join(dir, 'heartbeat_rank0.jsonl')).size > 400_000, 'a long streak on disk', 60_000, 100);
  await tw.stop('SIGKILL');
  const tw2 = await startTrainwatch(['--root', join(dir, '..'), '--halt', '0', '--tail.startup-bytes', '16384'], {
    ...FAST,
    NSA_WATCH_HEARTBEAT_STALL_S: '20',
    NSA_WATCH_STRAGGLER_STEPS: '500',
    NSA_WATCH_CRASH_DETECT: '1',
  });
  t.after(() => tw2.stop());
  const m = await waitFor(async () => {
    const text = await (await fetch(tw2.url + '/metrics')).text();
    return text.includes('anomaly_type="nonfinite_loss"} 1') ? text : undefined;
  }, 'the streak seen again after the restart');
  const streak = Number(/trainwatch_nonfinite_count\{run="run",rank="0"\} (\d+)/.exec(m)![1]);
  assert.equal(true, streak > 100, `streak ${streak} rebuilt across the window`);
  // More records of the streak after the restart, and sweeps: time for a false verdict to show.
  const nonfinite = (m: Map<string, number>) => m.get('trainwatch_nonfinite_count{run="run",rank="0"}') ?? 0;
  await scrapeUntil(tw2.url, (m) => nonfinite(m) >= streak + 100, 'more records of the streak');
  await sweepsPassed(tw2.url, join(dir, '..'), 2);
  assert.deepEqual(
    ['nonfinite_loss'],
    audit(dir)
      .filter((e) => e.event === 'anomaly')
      .map((e) => e.kind),
  );
  assert.equal(0, audit(dir).filter((e) => e.event === 'resolved').length);
});
