// The real trainwatch process against files written the way the trainer writes them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdirSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pyJson, requireBinary, scrape, startSimTrainer, startTrainwatch, tmpDir, waitFor } from '../helpers/proc.js';

/** Appends one record the trainer's way: open in append mode, write one line, close. */
function beat(dir: string, rank: number, fields: Record<string, unknown>): void {
  const rec = { ts: Date.now() / 1000, iso: new Date().toISOString(), pid: 4242, rank, step: 0, msg: 'progress', ...fields };
  appendFileSync(join(dir, `heartbeat_rank${rank}.jsonl`), pyJson(rec) + '\n');
}

const S = (run: string, rank: number | string, name: string, extra = '') => `${name}{run="${run}",rank="${rank}"${extra}}`;

test('a simulated two-rank trainer becomes correct per-rank metrics, and promtool check metrics prints nothing', async (t) => {
  const promtool = requireBinary('promtool', 'prometheus');
  const d = tmpDir();
  t.after(() => d.cleanup());
  const sim = startSimTrainer(['--dir', join(d.path, 'runA'), '--ranks', '2', '--step-s', '0.02', '--steps', '40', '--beats', '--quiet']);
  t.after(() => sim.kill());
  assert.equal(0, await sim.exited);
  const tw = await startTrainwatch(['--root', d.path]);
  t.after(() => tw.stop());
  const m = await waitFor(async () => {
    const m = await scrape(tw.url);
    return m.get(S('runA', 1, 'trainwatch_step')) === 40 ? m : undefined;
  }, 'step 40 on rank 1');
  assert.equal(40, m.get(S('runA', 0, 'trainwatch_step')));
  assert.equal(40, m.get(S('runA', 0, 'trainwatch_records_total', ',msg="progress"')));
  assert.equal(1, m.get(S('runA', 0, 'trainwatch_records_total', ',msg="boot"')));
  assert.equal(30000 * 1024 * 1024, m.get(S('runA', 0, 'trainwatch_gpu_memory_allocated_bytes')));
  assert.equal(0, m.get(S('runA', 0, 'trainwatch_throughput_flatline_count')));
  assert.equal(true, m.get(S('runA', 0, 'trainwatch_tokens_per_second'))! > 11000);
  assert.equal(true, m.get(S('runA', 0, 'trainwatch_heartbeat_age_seconds'))! >= 0);
  assert.equal(40, m.get('trainwatch_csv_step{run="runA"}'));
  assert.equal(1, m.get('trainwatch_runs_watched'));
  assert.equal(1, [...m.keys()].filter((k) => k.startsWith('trainwatch_build_info{')).length);
  const text = await (await fetch(tw.url + '/metrics')).text();
  const lint = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal('', lint.stdout + lint.stderr);
  assert.equal(0, lint.status);
});

test('gzip rotation and copytruncate mid-run: tailing continues, nothing is lost or read twice, the .gz is not read', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const run = join(d.path, 'rot');
  mkdirSync(run);
  const tw = await startTrainwatch(['--dir', run, '--tail.sweep-interval-s', '0.1']);
  t.after(() => tw.stop());
  const progress = async (n: number) =>
    waitFor(async () => (await scrape(tw.url)).get(S('rot', 0, 'trainwatch_records_total', ',msg="progress"')) === n, `${n} progress records`);
  for (let i = 1; i <= 10; i++) beat(run, 0, { step: i, toks_per_s: 100, loss: 2 });
  await progress(10);
  for (let i = 11; i <= 15; i++) beat(run, 0, { step: i, toks_per_s: 100, loss: 2 });
  // As the guide's `find … -exec gzip {} \;` does: the .jsonl vanishes, a .gz appears.
  const gz = spawnSync('gzip', [join(run, 'heartbeat_rank0.jsonl')]);
  assert.equal(0, gz.status);
  for (let i = 16; i <= 20; i++) beat(run, 0, { step: i, toks_per_s: 100, loss: 2 });
  await progress(20);
  // copytruncate: the content is copied away and the file truncated in place.
  renameSync(join(run, 'heartbeat_rank0.jsonl.gz'), join(run, 'heartbeat_rank0.jsonl.1.gz'));
  truncateSync(join(run, 'heartbeat_rank0.jsonl'), 0);
  for (let i = 21; i <= 25; i++) beat(run, 0, { step: i, toks_per_s: 100, loss: 2 });
  await progress(25);
  const m = await scrape(tw.url);
  assert.equal(25, m.get(S('rot', 0, 'trainwatch_step')));
  assert.equal(0, m.get('trainwatch_parse_errors_total{reason="invalid_json"}'));
  assert.equal(0, m.get('trainwatch_parse_errors_total{reason="invalid_utf8"}'));
});

test('a diverged run: bare NaN loss is exported as NaN and counted as non-finite', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const run = join(d.path, 'div');
  mkdirSync(run);
  beat(run, 0, { step: 1, loss: 2.5, grad_norm: 1 });
  beat(run, 0, { step: 2, loss: NaN, grad_norm: Infinity });
  const tw = await startTrainwatch(['--dir', run]);
  t.after(() => tw.stop());
  const m = await waitFor(async () => {
    const m = await scrape(tw.url);
    return m.get(S('div', 0, 'trainwatch_step')) === 2 ? m : undefined;
  }, 'step 2');
  assert.equal(true, Number.isNaN(m.get(S('div', 0, 'trainwatch_loss'))));
  assert.equal(Infinity, m.get(S('div', 0, 'trainwatch_grad_norm')));
  assert.equal(1, m.get(S('div', 0, 'trainwatch_nonfinite_count')));
  assert.equal(1, m.get(S('div', 0, 'trainwatch_anomaly', ',anomaly_type="nonfinite_loss"')));
});

test('bad lines are counted by reason and never stop the tail', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const run = join(d.path, 'bad');
  mkdirSync(run);
  const f = join(run, 'heartbeat_rank0.jsonl');
  const ok = (step: number) => pyJson({ ts: Date.now() / 1000, rank: 0, step, msg: 'progress' }) + '\n';
  writeFileSync(f, '\uFEFF' + ok(1) + '\n' + '{"ts": 1, "rank": 0\n' + '{"rank": 0, "step": 1}\n' + ok(2).replace('\n', '\r\n'));
  appendFileSync(f, Buffer.concat([Buffer.from('{"ts": 1, "rank": 0, "step": 1, "msg": "'), Buffer.from([0xff, 0xfe]), Buffer.from('"}\n')]));
  appendFileSync(f, 'x'.repeat(3000) + '\n' + ok(3) + '{"ts": 1, "rank"');
  const tw = await startTrainwatch(['--dir', run, '--tail.max-line-bytes', '2048']);
  t.after(() => tw.stop());
  const m = await waitFor(async () => {
    const m = await scrape(tw.url);
    return m.get(S('bad', 0, 'trainwatch_step')) === 3 ? m : undefined;
  }, 'step 3 after the bad lines');
  assert.equal(1, m.get('trainwatch_parse_errors_total{reason="blank_line"}'));
  assert.equal(1, m.get('trainwatch_parse_errors_total{reason="invalid_json"}'));
  assert.equal(1, m.get('trainwatch_parse_errors_total{reason="missing_field"}'));
  assert.equal(1, m.get('trainwatch_parse_errors_total{reason="invalid_utf8"}'));
  assert.equal(1, m.get('trainwatch_parse_errors_total{reason="line_too_long"}'));
  assert.equal(3, m.get(S('bad', 0, 'trainwatch_records_total', ',msg="progress"')));
  // The partial last line is not parsed until its newline arrives.
  appendFileSync(f, ': 0, "step": 4, "msg": "progress"}\n');
  await waitFor(async () => (await scrape(tw.url)).get(S('bad', 0, 'trainwatch_step')) === 4, 'the completed partial line');
});

test('runs under --root: a new run is picked up live, a removed run and an idle run past the TTL lose their series', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const old = join(d.path, 'old');
  mkdirSync(old);
  appendFileSync(join(old, 'heartbeat_rank0.jsonl'), pyJson({ ts: Date.now() / 1000 - 7200, rank: 0, step: 9, msg: 'progress' }) + '\n');
  const tw = await startTrainwatch(['--root', d.path, '--run.ttl-s', '3600', '--tail.sweep-interval-s', '0.2']);
  t.after(() => tw.stop());
  const fresh = join(d.path, 'team-a-run7');
  mkdirSync(fresh);
  beat(fresh, 0, { step: 3 });
  beat(fresh, 1, { step: 3 });
  await waitFor(async () => (await scrape(tw.url)).get(S('team-a-run7', 1, 'trainwatch_step')) === 3, 'the new run');
  let m = await scrape(tw.url);
  assert.equal(undefined, m.get(S('old', 0, 'trainwatch_step')));
  assert.equal(1, m.get('trainwatch_runs_watched'));
  rmSync(fresh, { recursive: true });
  await waitFor(async () => !(await scrape(tw.url)).has(S('team-a-run7', 1, 'trainwatch_step')), 'the removed run to vanish');
  m = await scrape(tw.url);
  assert.equal(0, m.get('trainwatch_runs_watched'));
});

test('an older single heartbeat.jsonl holding several ranks gives one series per rank', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const sim = startSimTrainer(['--dir', join(d.path, 'legacy'), '--ranks', '3', '--step-s', '0.01', '--steps', '5', '--legacy', '--beats', '--quiet']);
  t.after(() => sim.kill());
  assert.equal(0, await sim.exited);
  const tw = await startTrainwatch(['--dir', join(d.path, 'legacy')]);
  t.after(() => tw.stop());
  const m = await waitFor(async () => {
    const m = await scrape(tw.url);
    return [0, 1, 2].every((r) => m.get(S('legacy', r, 'trainwatch_step')) === 5) ? m : undefined;
  }, 'three ranks at step 5');
  assert.equal(3, m.get('trainwatch_run_ranks{run="legacy"}'));
});

test('the landing page links to /metrics, and /healthz and /readyz answer', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const tw = await startTrainwatch(['--root', d.path]);
  t.after(() => tw.stop());
  const page = await (await fetch(tw.url + '/')).text();
  assert.equal(true, page.includes('href="./metrics"'));
  assert.equal(200, (await fetch(tw.url + '/healthz')).status);
  assert.equal(200, (await fetch(tw.url + '/readyz')).status);
  assert.equal(404, (await fetch(tw.url + '/nope')).status);
});

test('SIGTERM stops trainwatch cleanly with exit code 0', async () => {
  const d = tmpDir();
  const tw = await startTrainwatch(['--root', d.path]);
  assert.equal(0, await tw.stop('SIGTERM'));
  d.cleanup();
});
