// Run lifecycle end to end (issue 10's "Done when"): real trainwatch, real simulated trainers
// in the real trainer's layout (rank-0-only progress, boot-only ranks >= 1, the in-trainer
// watchdog thread scaled to 0.3 s / 1 s, synchronous DDP, SIGTERM caught). Thresholds are small
// but far above a scheduling gap on a loaded 2-core box: stall 3 s.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pyJson, scrape, startSimTrainer, startTrainwatch, teardown, tmpDir, waitFor, type SimTrainer, type TrainwatchProc } from '../helpers/proc.js';

const STALL_S = 3;
const TW = [
  '--halt',
  '1',
  '--watch.heartbeat-stall-s',
  String(STALL_S),
  '--watch.startup-grace-s',
  '8',
  '--watch.flatline-n',
  '3',
  '--watch.interval-s',
  '0.5',
  '--tail.sweep-interval-s',
  '0.5',
];
/** The trainer's own watchdog, scaled from 30 s / 180 s; progress every 5 steps of 50 ms. */
const SIM = ['--step-s', '0.05', '--log-every', '5', '--wd-check-s', '0.3', '--wd-stall-s', '1', '--quiet'];

interface RunStatus {
  run: string;
  dir: string;
  state: string;
  reason?: string;
  primary?: { kind: string; severity: string; rank: number; message: string };
  liveness: string;
  attempt: number;
  ranks: Array<{ rank: number; step?: number }>;
}
interface Status {
  now: number;
  runs: RunStatus[];
}

const status = async (tw: TrainwatchProc): Promise<Status> => (await (await fetch(`${tw.url}/api/status`)).json()) as Status;
const runOf = async (tw: TrainwatchProc, name: string) => (await status(tw)).runs.find((r) => r.run === name);
const read = (dir: string, f: string) => (existsSync(join(dir, f)) ? readFileSync(join(dir, f), 'utf8') : undefined);
const audit = (dir: string) =>
  (read(dir, '.trainwatch-audit.jsonl') ?? '')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
const records = (dir: string, rank: number) =>
  (read(dir, `heartbeat_rank${rank}.jsonl`) ?? '')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l.replace(/\bNaN\b/g, 'null')) as { ts: number; msg: string; step: number; pid: number });
const lastCsvStep = (dir: string) => Number((read(dir, 'training.csv') ?? '').trim().split('\n').pop()!.split(',')[0]);

/** A temp root, trainwatch on it, and a way to start trainers that are killed at the end. */
async function setup(t: Parameters<typeof teardown>[0], twArgs: string[] = [], root?: string) {
  const later = teardown(t);
  const d = tmpDir('tw-life-');
  later(() => d.cleanup());
  const base = root ?? d.path;
  const tw = await startTrainwatch(['--root', base, ...TW, ...twArgs]);
  later(() => tw.stop());
  const sim = (dir: string, args: string[], opts: { cwd?: string } = {}): SimTrainer => {
    const s = startSimTrainer(['--dir', dir, ...SIM, ...args], opts);
    later(() => s.kill());
    return s;
  };
  return { root: base, tw, sim, later };
}

/** The runbook's "clear a run": cat, then remove the control files (docs/runbook.md). */
function clearAsRunbookSays(dir: string) {
  for (const f of ['.anomaly_type', '.anomaly.json', '.HALT']) rmSync(join(dir, f), { force: true });
}

describe('healthy runs in the real layout are never halted', { concurrency: 2 }, () => {
  for (const ranks of [2, 8]) {
    test(`${ranks} ranks, healthy, over several of the trainer's own watchdog dump periods: no .HALT, the run finishes`, { timeout: 90_000 }, async (t) => {
      const { root, tw, sim } = await setup(t);
      const dir = join(root, 'run');
      // 140 steps of 50 ms: about 7 s, several 1 s dump periods of every silent rank >= 1.
      const s = sim(dir, ['--ranks', String(ranks), '--steps', '140']);
      assert.equal(0, await s.exited, s.output());
      assert.equal(140, lastCsvStep(dir));
      assert.equal(false, existsSync(join(dir, '.sim_stopped_rank0')));
      // The silent ranks did dump, as the real trainer's watchdog does on a healthy run.
      for (let r = 1; r < ranks; r++) assert.equal(true, records(dir, r).filter((x) => x.msg === 'watchdog_dump').length >= 3, `rank ${r} dumps`);
      const run = await waitFor(async () => {
        const run = await runOf(tw, 'run');
        return run?.state === 'finished' ? run : undefined;
      }, 'the run to be finished');
      assert.equal('exited', run.liveness);
      assert.equal(undefined, read(dir, '.HALT'));
      assert.equal(undefined, read(dir, '.anomaly_type'));
    });
  }
});

describe('hangs halt the run at the threshold', { concurrency: 2 }, () => {
  test('rank 0 hangs: .anomaly_type heartbeat_stall and .HALT, not before the stall threshold', { timeout: 60_000 }, async (t) => {
    const { root, tw, sim } = await setup(t);
    const dir = join(root, 'run');
    // The trainer's own watchdog dumps after 10 s here, so the 3 s threshold decides, not its dump.
    sim(dir, ['--ranks', '2', '--fault', 'heartbeat_stall', '--fault-rank', '0', '--fault-at', '40', '--wd-stall-s', '10']);
    await waitFor(() => read(dir, '.HALT'), '.HALT', 30_000);
    assert.equal('heartbeat_stall\n', read(dir, '.anomaly_type'));
    assert.equal('halt: heartbeat_stall\n', read(dir, '.HALT'));
    const lastLive = Math.max(
      ...records(dir, 0)
        .filter((x) => x.msg !== 'watchdog_dump')
        .map((x) => x.ts),
    );
    assert.equal(true, statSync(join(dir, '.HALT')).mtimeMs / 1000 >= lastLive + STALL_S - 0.05, 'halted before the threshold');
    const run = await runOf(tw, 'run');
    assert.equal('halt_requested', run?.state);
    assert.match(run?.reason ?? '', /heartbeat_stall/);
  });

  test('a frozen rank 1 blocks rank 0 at the next collective, as DDP does: the run is halted for heartbeat_stall', { timeout: 60_000 }, async (t) => {
    const { root, sim } = await setup(t);
    const dir = join(root, 'run');
    sim(dir, ['--ranks', '4', '--fault', 'frozen', '--fault-rank', '1', '--fault-at', '40']);
    await waitFor(() => read(dir, '.HALT'), '.HALT', 30_000);
    assert.equal('heartbeat_stall\n', read(dir, '.anomaly_type'));
    assert.equal('halt: heartbeat_stall\n', read(dir, '.HALT'));
    // Rank 0 stopped writing progress when rank 1 froze: it never reached step 40's log.
    assert.equal(true, lastCsvStep(dir) < 40);
  });
});

test('a run that finishes normally has no .HALT two stall thresholds after its end', { timeout: 60_000 }, async (t) => {
  const { root, tw, sim } = await setup(t);
  const dir = join(root, 'done');
  // The control run hangs at the step where "done" ends: its halt proves that trainwatch judged
  // silence past the threshold while "done" was silent too.
  const done = sim(dir, ['--ranks', '2', '--steps', '60']);
  sim(join(root, 'control'), ['--ranks', '2', '--fault', 'heartbeat_stall', '--fault-rank', '0', '--fault-at', '61']);
  assert.equal(0, await done.exited);
  const end = Math.max(...records(dir, 0).map((x) => x.ts));
  await waitFor(() => read(join(root, 'control'), '.HALT'), 'the control run halted', 30_000);
  const run = await waitFor(
    async () => {
      const s = await status(tw);
      return s.now >= end + 2 * STALL_S ? s.runs.find((r) => r.run === 'done') : undefined;
    },
    'two thresholds past the end',
    30_000,
    200,
  );
  assert.equal('finished', run.state);
  assert.equal(undefined, read(dir, '.HALT'));
  assert.equal(undefined, read(dir, '.anomaly_type'));
  const m = await scrape(tw.url);
  assert.equal(1, m.get('trainwatch_run_state{run="done",state="finished"}'));
  assert.equal(0, m.get('trainwatch_run_state{run="done",state="halt_requested"}'));
  assert.equal(1, m.get('trainwatch_run_state{run="control",state="halt_requested"}'));
});

test('halt, clear as the runbook says, resume in the same directory: the new trainer trains to its end', { timeout: 90_000 }, async (t) => {
  const { root, tw, sim } = await setup(t);
  const dir = join(root, 'run');
  const first = sim(dir, ['--ranks', '2', '--fault', 'throughput_flatline', '--fault-at', '20']);
  assert.equal(0, await first.exited); // it read .HALT and stopped
  assert.equal('halt: throughput_flatline\n', read(dir, '.HALT'));
  await waitFor(async () => (await runOf(tw, 'run'))?.state === 'halted', 'the run halted');
  clearAsRunbookSays(dir);
  rmSync(join(dir, '.sim_stopped_rank0'));
  const resumed = sim(dir, ['--ranks', '2', '--steps', '100']);
  assert.equal(0, await resumed.exited, resumed.output());
  assert.equal(
    false,
    existsSync(join(dir, '.sim_stopped_rank0')),
    `the resumed trainer was halted: ${read(dir, '.HALT')}${read(dir, '.trainwatch-audit.jsonl')}`,
  );
  assert.equal(100, lastCsvStep(dir));
  const run = await waitFor(async () => {
    const run = await runOf(tw, 'run');
    return run?.state === 'finished' ? run : undefined;
  }, 'the resumed run to be finished');
  assert.equal(true, run.attempt >= 2, `attempt ${run.attempt}`);
  assert.equal(undefined, read(dir, '.HALT'));
});

test('the fault recurs while trainwatch restarts: the restarted trainwatch halts the run again', { timeout: 90_000 }, async (t) => {
  const { root, tw, sim, later } = await setup(t);
  const dir = join(root, 'run');
  const first = sim(dir, ['--ranks', '2', '--fault', 'throughput_flatline', '--fault-at', '20']);
  assert.equal(0, await first.exited);
  await waitFor(async () => (await runOf(tw, 'run'))?.state === 'halted', 'the run halted');
  clearAsRunbookSays(dir);
  rmSync(join(dir, '.sim_stopped_rank0'));
  await tw.stop('SIGKILL');
  const again = sim(dir, ['--ranks', '2', '--fault', 'throughput_flatline', '--fault-at', '20']);
  await waitFor(() => records(dir, 0).some((x) => x.msg === 'progress' && x.step >= 25), 'the fault back on disk');
  const tw2 = await startTrainwatch(['--root', root, ...TW]);
  later(() => tw2.stop());
  assert.equal(0, await again.exited);
  assert.equal('throughput_flatline\n', read(dir, '.anomaly_type'));
  assert.equal('halt: throughput_flatline\n', read(dir, '.HALT'));
  assert.equal(true, existsSync(join(dir, '.sim_stopped_rank0')));
  assert.equal(2, audit(dir).filter((e) => e.event === 'anomaly').length);
});

test('with watch.auto-clear-halt, trainwatch removes its own .HALT once the trainer exited, and a restart trains', { timeout: 90_000 }, async (t) => {
  const { root, tw, sim } = await setup(t, ['--watch.auto-clear-halt']);
  const dir = join(root, 'run');
  const first = sim(dir, ['--ranks', '2', '--fault', 'throughput_flatline', '--fault-at', '20']);
  assert.equal(0, await first.exited);
  await waitFor(() => audit(dir).some((e) => e.action === 'halt_cleared'), 'trainwatch to remove its .HALT');
  assert.deepEqual(
    ['ok'],
    audit(dir)
      .filter((e) => e.action === 'halt_cleared')
      .map((e) => e.result),
  );
  assert.equal(false, existsSync(join(dir, '.HALT')));
  rmSync(join(dir, '.sim_stopped_rank0'));
  const restarted = sim(dir, ['--ranks', '2', '--steps', '80']);
  assert.equal(0, await restarted.exited);
  assert.equal(
    false,
    existsSync(join(dir, '.sim_stopped_rank0')),
    `the restarted trainer was halted: ${read(dir, '.HALT')}${read(dir, '.trainwatch-audit.jsonl')}`,
  );
  assert.equal(80, lastCsvStep(dir));
  await waitFor(async () => (await runOf(tw, 'run'))?.state === 'finished', 'the restarted run to be finished');
});

test('a crash (a rank exits 1, the launcher ends the others) is state crashed with crash detection on, and gets no .HALT', { timeout: 60_000 }, async (t) => {
  const { root, tw, sim } = await setup(t, ['--watch.crash-detect']);
  const dir = join(root, 'run');
  const s = sim(dir, ['--ranks', '2', '--fault', 'crash', '--fault-rank', '1', '--fault-at', '30']);
  assert.equal(1, await s.exited);
  const run = await waitFor(async () => {
    const run = await runOf(tw, 'run');
    return run?.state === 'crashed' ? run : undefined;
  }, 'the run crashed');
  assert.equal('exited', run.liveness);
  await waitFor(() => read(dir, '.anomaly_type'), '.anomaly_type');
  assert.equal('trainer_crash\n', read(dir, '.anomaly_type'));
  assert.equal(undefined, read(dir, '.HALT'));
});

test('a deleted rank file leaves the run: the next trainer with fewer ranks is not halted for the old rank', { timeout: 90_000 }, async (t) => {
  const { root, tw, sim } = await setup(t);
  const dir = join(root, 'run');
  // Per-step beats make rank 1 a periodic writer, whose silence would be a stall.
  const two = sim(dir, ['--ranks', '2', '--beats', '--steps', '40']);
  assert.equal(0, await two.exited);
  await waitFor(async () => (await runOf(tw, 'run'))?.ranks.some((r) => r.rank === 1 && r.step === 40), 'rank 1 at step 40');
  rmSync(join(dir, 'heartbeat_rank1.jsonl'));
  const one = sim(dir, ['--ranks', '1', '--beats', '--steps', '200']);
  await waitFor(async () => (await runOf(tw, 'run'))?.ranks.map((r) => r.rank).join() === '0', 'rank 1 gone from the run');
  assert.equal(0, await one.exited);
  assert.equal(false, existsSync(join(dir, '.sim_stopped_rank0')), 'the one-rank trainer was halted');
  assert.equal(undefined, read(dir, '.HALT'));
});

test('a run directory removed and recreated within 0.5 s is a new run instance: no false stall', { timeout: 90_000 }, async (t) => {
  const { root, tw, sim } = await setup(t);
  const dir = join(root, 'run');
  const old = sim(dir, ['--ranks', '2', '--beats']);
  await waitFor(async () => ((await runOf(tw, 'run'))?.ranks.find((r) => r.rank === 1)?.step ?? 0) >= 20, 'the old trainer at step 20');
  old.kill();
  await old.exited;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  const fresh = sim(dir, ['--ranks', '2', '--beats', '--steps', '160', '--boot-s', '1']);
  assert.equal(0, await fresh.exited, fresh.output());
  assert.equal(false, existsSync(join(dir, '.sim_stopped_rank0')), 'the new trainer was halted');
  assert.equal(undefined, read(dir, '.HALT'));
  await waitFor(async () => (await runOf(tw, 'run'))?.state === 'finished', 'the new run to be finished');
});

test('two runs with the same directory name (--dir a/run --dir b/run) get distinct run labels', { timeout: 60_000 }, async (t) => {
  const later = teardown(t);
  const d = tmpDir('tw-life-');
  later(() => d.cleanup());
  const a = join(d.path, 'a', 'run');
  const b = join(d.path, 'b', 'run');
  mkdirSync(a, { recursive: true });
  mkdirSync(b, { recursive: true });
  const tw = await startTrainwatch(['--dir', a, '--dir', b, ...TW]);
  later(() => tw.stop());
  for (const dir of [a, b]) {
    const s = startSimTrainer(['--dir', dir, ...SIM, '--ranks', '2', '--steps', '30']);
    later(() => s.kill());
  }
  const runs = await waitFor(async () => {
    const runs = (await status(tw)).runs;
    return runs.length === 2 && runs.every((r) => r.ranks.length === 2) ? runs : undefined;
  }, 'both runs seen');
  assert.notEqual(runs[0].run, runs[1].run);
  assert.deepEqual([a, b], runs.map((r) => r.dir).sort());
  const metrics = await (await fetch(`${tw.url}/metrics`)).text();
  const labels = new Set([...metrics.matchAll(/^trainwatch_run_ranks\{run="([^"]+)"\}/gm)].map((m) => m[1]));
  assert.equal(2, labels.size);
});

test('two anomalies in one batch: .anomaly_type, .anomaly.json and .HALT agree on the higher-priority kind', { timeout: 60_000 }, async (t) => {
  const later = teardown(t);
  const d = tmpDir('tw-life-');
  later(() => d.cleanup());
  const dir = join(d.path, 'run');
  mkdirSync(dir);
  const tw = await startTrainwatch(['--root', d.path, ...TW]);
  later(() => tw.stop());
  const file = join(dir, 'heartbeat_rank0.jsonl');
  const rec = (step: number, extra: Record<string, unknown>) =>
    pyJson({
      ts: Date.now() / 1000,
      pid: process.pid,
      rank: 0,
      step,
      msg: 'progress',
      loss: 3 - step / 100,
      toks_per_s: 1000,
      grad_norm: 1,
      dt_fetch_s: 0.01,
      ...extra,
    }) + '\n';
  appendFileSync(file, pyJson({ ts: Date.now() / 1000, pid: process.pid, rank: 0, step: 0, msg: 'boot', phase: 'start' }) + '\n');
  let lines = '';
  for (let s = 1; s <= 20; s++) lines += rec(s, {});
  appendFileSync(file, lines);
  await waitFor(async () => (await runOf(tw, 'run'))?.ranks[0]?.step === 20, 'the baseline read');
  // One append: a fetch stall (a warning) and a non-finite grad_norm (critical, halting) together.
  appendFileSync(file, rec(21, { dt_fetch_s: 5 }) + rec(22, { grad_norm: NaN, dt_fetch_s: 5 }));
  await waitFor(() => read(dir, '.HALT'), '.HALT');
  await waitFor(() => read(dir, '.anomaly.json'), '.anomaly.json');
  assert.equal('nonfinite_loss\n', read(dir, '.anomaly_type'));
  assert.equal('halt: nonfinite_loss\n', read(dir, '.HALT'));
  assert.equal('nonfinite_loss', (JSON.parse(read(dir, '.anomaly.json')!) as { kind: string }).kind);
  assert.equal('nonfinite_loss', (await runOf(tw, 'run'))?.primary?.kind);
});

test(
  'escalation ends a hung trainer that ignores SIGTERM: SIGUSR1, SIGTERM, then SIGKILL, and the audit says the process exited',
  { timeout: 90_000 },
  async (t) => {
    const { root, sim } = await setup(t, ['--watch.escalate-s', '1', '--watch.escalate-term-s', '1', '--watch.escalate-kill-s', '1']);
    const dir = join(root, 'run');
    // Started from the directory that holds the run, as the real trainer runs from its checkout
    // with out_dir below it: escalation's proof accepts a cwd that contains the run.
    const s = sim(dir, ['--ranks', '2', '--fault', 'heartbeat_stall', '--fault-at', '30'], { cwd: root });
    await waitFor(() => read(dir, '.HALT'), '.HALT', 30_000);
    assert.notEqual(0, await s.exited); // killed
    const pids = [...new Set([0, 1].map((r) => records(dir, r)[0].pid))];
    const exits = await waitFor(() => {
      const exits = audit(dir).filter((e) => String(e.action).startsWith('exit:'));
      return exits.length === pids.length ? exits : undefined;
    }, 'every rank seen gone');
    assert.deepEqual(
      pids.map(() => 'exited'),
      exits.map((e) => e.result),
    );
    // SIGTERM only made the ranks dump their stacks and run on; SIGKILL ended them.
    const sent = audit(dir)
      .filter((e) => e.signal && e.result === 'sent')
      .map((e) => e.signal);
    assert.deepEqual(['SIGKILL', 'SIGTERM', 'SIGUSR1'], [...new Set(sent)].sort());
    assert.equal(
      true,
      readdirSync(dir).some((f) => f.startsWith('stackdump_')),
    );
    assert.equal(
      true,
      exits.some((e) => e.signal === 'SIGKILL'),
    );
  },
);
