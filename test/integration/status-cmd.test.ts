// `trainwatch status` as an operator runs it over ssh: against bare run directories (read once,
// nothing written) and against a live trainwatch, with its table, --json and exit status.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, freePort, pyJson, startSimTrainer, startTrainwatch, teardown, tmpDir, waitFor } from '../helpers/proc.js';

/** Runs `trainwatch status …` to its exit. */
function status(args: string[], cwd?: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, 'status', ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => resolve({ code, out, err }));
  });
}

/** Writes a run whose two ranks logged progress up to `ageS` seconds ago. */
function writeRun(dir: string, ageS: number, pid: number): void {
  mkdirSync(dir, { recursive: true });
  const now = Date.now() / 1000 - ageS;
  for (const rank of [0, 1]) {
    const lines = [pyJson({ ts: now - 60, rank, step: 0, msg: 'boot', phase: 'start', pid })];
    if (rank === 0)
      for (let step = 1; step <= 20; step++)
        lines.push(pyJson({ ts: now - 20 + step, rank, step, msg: 'progress', loss: 3 - step / 100, toks_per_s: 12500, pid }));
    writeFileSync(join(dir, `heartbeat_rank${rank}.jsonl`), lines.join('\n') + '\n');
  }
}

type Out = {
  format: number;
  source: string;
  exit: number;
  runs: Array<{
    run: string;
    state: string;
    healthy: boolean;
    primary: { kind: string; rank: number } | null;
    halt: { kind: string | null; by: string } | null;
    ranks: Array<{ rank: number; role: string; age_s: number | null; step: number | null; tokens_per_s: number | null }>;
  }>;
};

test('status on bare directories: a healthy and a stalled, halted run; table within 80 columns, --json, exit 1, nothing written', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  // pid 2^22+1 is above pid_max on most hosts: never alive, so liveness stays unknown.
  writeRun(join(d.path, 'healthy'), 1, 4194305);
  writeRun(join(d.path, 'stalled'), 1000, 4194305);
  writeFileSync(join(d.path, 'stalled', '.HALT'), 'halt: heartbeat_stall\n');
  const before = readdirSync(join(d.path, 'stalled')).sort();
  const port = await freePort(); // nothing listens there: status reads the files
  const table = await status(['--root', d.path, '--web.listen-address', `127.0.0.1:${port}`]);
  assert.equal(1, table.code, table.err);
  const lines = table.out.trimEnd().split('\n');
  assert.deepEqual(
    [],
    lines.filter((l) => l.length > 80),
  );
  assert.match(table.out, /^healthy +training +- +-$/m);
  assert.match(table.out, /^stalled +halt_requested +- +heartbeat_stall$/m);
  assert.match(table.out, /^ {2}why: \.HALT present: heartbeat_stall; waiting for the trainer to stop \(liveness\n {7}unknown\)$/m);
  assert.match(table.out, /^ {2}rank 0 +periodic +age +\d+\.\ds +step +20 +tok\/s +12\.5k$/m);
  assert.match(table.out, /^1 of 2 runs need attention; source: files$/m);
  const json = await status(['--root', d.path, '--json', '--web.listen-address', `127.0.0.1:${port}`]);
  assert.equal(1, json.code);
  const o = JSON.parse(json.out) as Out;
  assert.deepEqual([1, 'files', 1], [o.format, o.source, o.exit]);
  assert.deepEqual(
    ['healthy:training:true', 'stalled:halt_requested:false'],
    o.runs.map((r) => `${r.run}:${r.state}:${r.healthy}`),
  );
  assert.deepEqual({ kind: 'heartbeat_stall', by: 'unknown' }, o.runs[1].halt);
  assert.deepEqual([0, 'periodic', 20, 12500], [o.runs[0].ranks[0].rank, o.runs[0].ranks[0].role, o.runs[0].ranks[0].step, o.runs[0].ranks[0].tokens_per_s]);
  assert.deepEqual(before, readdirSync(join(d.path, 'stalled')).sort());
});

test('status on a stalled run without .HALT reports the heartbeat_stall as primary, exits 1, and writes no control file or audit entry', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  writeRun(join(d.path, 'hung'), 1000, 4194305);
  const port = await freePort();
  const r = await status(['--dir', join(d.path, 'hung'), '--json', '--web.listen-address', `127.0.0.1:${port}`]);
  assert.equal(1, r.code, r.err);
  const o = JSON.parse(r.out) as Out;
  assert.deepEqual(['anomalous', { kind: 'heartbeat_stall', rank: 0 }], [o.runs[0].state, { kind: o.runs[0].primary!.kind, rank: o.runs[0].primary!.rank }]);
  assert.deepEqual(['heartbeat_rank0.jsonl', 'heartbeat_rank1.jsonl'], readdirSync(join(d.path, 'hung')).sort());
});

test('status against a live trainwatch: --url and the listen address both ask it; a halted anomaly exits 1', { timeout: 60_000 }, async (t) => {
  const d = tmpDir();
  const later = teardown(t);
  later(() => d.cleanup());
  const dir = join(d.path, 'run');
  const sim = startSimTrainer(['--dir', dir, '--ranks', '2', '--step-s', '0.03', '--quiet', '--fault', 'throughput_flatline', '--fault-at', '10']);
  later(() => sim.kill());
  const tw = await startTrainwatch(['--root', d.path, '--halt', '1'], { NSA_WATCH_FLATLINE_N: '3', TRAINWATCH_SWEEP_INTERVAL_S: '0.5' });
  later(() => tw.stop());
  await sim.exited;
  const r = await waitFor(async () => {
    const got = await status(['--url', tw.url, '--json']);
    const o = JSON.parse(got.out) as Out;
    return o.runs[0]?.halt ? { code: got.code, o } : undefined;
  }, 'the halt in the live status');
  assert.equal(1, r.code);
  assert.deepEqual(
    [tw.url, 'throughput_flatline', { kind: 'throughput_flatline', by: 'trainwatch' }],
    [r.o.source, r.o.runs[0].primary?.kind ?? r.o.runs[0].halt!.kind, r.o.runs[0].halt],
  );
  const viaAddress = await status(['--web.listen-address', `127.0.0.1:${tw.port}`]);
  assert.equal(1, viaAddress.code);
  assert.match(viaAddress.out, /^run +halt\S* +.* throughput_flatline$/m);
  assert.match(viaAddress.out, /^ {2}why: halted by trainwatch: throughput_flatline/m);
  assert.match(viaAddress.out, new RegExp(`source: ${tw.url}$`, 'm'));
});

test('status usage errors exit 2 with the fix: an unknown flag, nothing at --url, nothing to read', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const port = await freePort();
  const bad = await status(['--bogus']);
  assert.equal(2, bad.code);
  const none = await status(['--url', `http://127.0.0.1:${port}`]);
  assert.equal(2, none.code);
  assert.match(none.err, /no trainwatch answered at http:\/\/127\.0\.0\.1:\d+\/api\/status\. Check --url/);
  const nothing = await status(['--web.listen-address', `127.0.0.1:${port}`], d.path);
  assert.equal(2, nothing.code);
  assert.match(nothing.err, /nothing to watch\. Pass --dir/);
});
