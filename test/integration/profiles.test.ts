// Per-run threshold profiles with a real trainwatch: two runs on one instance, each judged by
// its own profile (run.profile globs), and a run directory that names its profile
// (run.profile-file). Records are written as the trainer writes them; a step_end record after
// each batch is the sentinel (it neither adds to nor resets a throughput streak).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, scrape, waitFor } from '../helpers/proc.js';
import { beat, records, scratch, startTw } from '../helpers/reliability.js';

interface RunDoc {
  run: string;
  profile: { name: string; via: string; halt: boolean };
  ranks: Array<{ rank: number; streaks: Record<string, { value: number; threshold: number }> }>;
}

async function runDoc(url: string, run: string): Promise<RunDoc> {
  const doc = (await (await fetch(`${url}/api/status`)).json()) as { runs: RunDoc[] };
  return doc.runs.find((r) => r.run === run)!;
}

/** Appends `n` zero-throughput progress records from `from` on, then a step_end sentinel, and waits until trainwatch counted the sentinel. */
async function zeros(url: string, dir: string, run: string, from: number, n: number): Promise<void> {
  for (let i = 0; i < n; i++) beat(dir, 0, from + i, 'progress', { toks_per_s: 0 });
  const want = records(await scrape(url), run, 0, 'step_end') + 1;
  beat(dir, 0, from + n - 1, 'step_end');
  await waitFor(async () => records(await scrape(url), run, 0, 'step_end') >= want, `the sentinel of ${run}`);
}

/** The audit log's action entries of a run. */
function actions(dir: string): string[] {
  const path = join(dir, '.trainwatch-audit.jsonl');
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { event: string; action?: string })
    .filter((e) => e.event === 'action')
    .map((e) => e.action!);
}

test(
  'two runs on different profiles: prod (a100-production) halts at its 3rd zero-throughput record, dev (rtx4090-dev) is only flagged, at its 8th',
  { timeout: 120_000 },
  async (t) => {
    const root = scratch(t);
    const prod = join(root, 'prod-a');
    const dev = join(root, 'dev-b');
    for (const d of [prod, dev]) {
      mkdirSync(d);
      beat(d, 0, 0, 'boot');
    }
    // --halt 0 globally: only a profile that says halt writes .HALT.
    const tw = await startTw(t, ['--root', root, '--halt', '0', '--run.profile', 'prod-*=a100-production', '--run.profile', 'dev-*=rtx4090-dev']);
    await zeros(tw.url, prod, 'prod-a', 1, 2);
    await zeros(tw.url, dev, 'dev-b', 1, 2);
    assert.deepEqual(
      [false, false],
      [existsSync(join(prod, '.anomaly_type')), existsSync(join(dev, '.anomaly_type'))],
      'two records are under both thresholds',
    );

    await zeros(tw.url, prod, 'prod-a', 3, 1);
    await zeros(tw.url, dev, 'dev-b', 3, 1);
    await waitFor(() => existsSync(join(prod, '.HALT')), 'prod-a to be halted at its 3rd record');
    assert.equal('throughput_flatline', readFileSync(join(prod, '.anomaly_type'), 'utf8').trim());
    const devNow = await runDoc(tw.url, 'dev-b');
    assert.deepEqual(
      [
        { value: 3, threshold: 8 },
        { name: 'rtx4090-dev', via: 'glob', halt: false },
      ],
      [devNow.ranks[0].streaks.throughput_flatline, devNow.profile],
    );
    assert.equal(false, existsSync(join(dev, '.anomaly_type')), "dev-b is judged by its own threshold (8), not prod-a's (3)");
    const prodNow = await runDoc(tw.url, 'prod-a');
    assert.deepEqual({ name: 'a100-production', via: 'glob', halt: true }, prodNow.profile);

    await zeros(tw.url, dev, 'dev-b', 4, 4);
    assert.equal(false, existsSync(join(dev, '.anomaly_type')), 'seven records are still under 8');
    await zeros(tw.url, dev, 'dev-b', 8, 1);
    await waitFor(() => actions(dev).includes('details'), "dev-b's episode to be acted on at its 8th record");
    assert.equal('throughput_flatline', readFileSync(join(dev, '.anomaly_type'), 'utf8').trim());
    assert.deepEqual([false, false], [existsSync(join(dev, '.HALT')), actions(dev).includes('halt')], 'rtx4090-dev does not halt');

    const m = await scrape(tw.url);
    assert.deepEqual(
      [3, 8, 120, 300, 1, 1],
      [
        m.get('trainwatch_threshold_throughput_flatline_records{run="prod-a"}'),
        m.get('trainwatch_threshold_throughput_flatline_records{run="dev-b"}'),
        m.get('trainwatch_threshold_heartbeat_stall_seconds{run="prod-a"}'),
        m.get('trainwatch_threshold_heartbeat_stall_seconds{run="dev-b"}'),
        m.get('trainwatch_run_profile{run="prod-a",profile="a100-production"}'),
        m.get('trainwatch_run_profile{run="dev-b",profile="rtx4090-dev"}'),
      ],
    );
    const status = spawnSync(process.execPath, [BIN, 'status', '--url', tw.url], { encoding: 'utf8' });
    assert.equal(1, status.status, status.stderr);
    assert.match(status.stdout, /^ {2}profile: rtx4090-dev \(glob, no auto-halt\)$/m);
    assert.match(status.stdout, /^ {2}profile: a100-production \(glob\)$/m);
  },
);

test(
  'run.profile-file: a run directory names a defined profile and is judged by it; an undefined name is logged with the fix and ignored',
  { timeout: 120_000 },
  async (t) => {
    const root = scratch(t);
    const run = join(root, 'exp');
    mkdirSync(run);
    beat(run, 0, 0, 'boot');
    writeFileSync(join(root, 'tw.yml'), 'profiles:\n  strict:\n    NSA_WATCH_FLATLINE_N: 2\n    halt: 1\n');
    writeFileSync(join(run, '.trainwatch-profile'), 'strict\n');
    const tw = await startTw(t, ['--root', root, '--config', join(root, 'tw.yml'), '--run.profile-file', '1']);
    await waitFor(async () => (await runDoc(tw.url, 'exp'))?.profile.name === 'strict', 'the run to be on the profile its directory names');
    assert.deepEqual({ name: 'strict', via: 'file', halt: true }, (await runDoc(tw.url, 'exp')).profile);

    writeFileSync(join(run, '.trainwatch-profile'), 'no-such-profile\n');
    await waitFor(() => /names a profile that is not defined.*Fix: name one of the known profiles/.test(tw.logs()), 'the undefined profile to be logged');
    await waitFor(async () => (await runDoc(tw.url, 'exp')).profile.name === 'default', 'the run to fall back to its glob profile (none: default)');

    writeFileSync(join(run, '.trainwatch-profile'), 'strict\n');
    await waitFor(async () => (await runDoc(tw.url, 'exp')).profile.name === 'strict', 'the run to be back on strict');
    await zeros(tw.url, run, 'exp', 1, 2);
    await waitFor(() => existsSync(join(run, '.HALT')), "the run to be halted at strict's 2nd record (the default is 5)");
    rmSync(join(run, '.trainwatch-profile'));
    await waitFor(async () => (await runDoc(tw.url, 'exp')).profile.name === 'default', 'without the file, the run is on its glob profile again');
  },
);

test('the profile file is ignored unless run.profile-file is on', { timeout: 60_000 }, async (t) => {
  const root = scratch(t);
  const run = join(root, 'exp');
  mkdirSync(run);
  beat(run, 0, 0, 'boot');
  writeFileSync(join(run, '.trainwatch-profile'), 'rtx4090-dev\n');
  const tw = await startTw(t, ['--root', root, '--run.profile', 'e*=multi-node']);
  await zeros(tw.url, run, 'exp', 1, 1);
  assert.deepEqual({ name: 'multi-node', via: 'glob', halt: true }, (await runDoc(tw.url, 'exp')).profile);
});
