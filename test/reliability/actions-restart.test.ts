// kill -9 while actions are in flight, then restart: no action lost, none repeated, and the
// audit log and the control files agree.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, freePort, pyJson, startTrainwatch, tmpDir, waitFor } from '../helpers/proc.js';

const RUNS = 40;

test('kill9_while_actions_in_flight: after a restart every run has its files, one episode and each action once', { timeout: 120_000 }, async (t) => {
  const d = tmpDir('tw-kill9-');
  t.after(() => d.cleanup());
  const now = Date.now() / 1000;
  for (let i = 0; i < RUNS; i++) {
    const dir = join(d.path, `run${String(i).padStart(2, '0')}`);
    mkdirSync(dir);
    writeFileSync(
      join(dir, 'heartbeat_rank0.jsonl'),
      [1, 2, 3].map((s) => pyJson({ ts: now, rank: 0, step: s, msg: 'progress', loss: s === 3 ? NaN : 2.0 })).join('\n') + '\n',
    );
  }
  const dirs = Array.from({ length: RUNS }, (_, i) => join(d.path, `run${String(i).padStart(2, '0')}`));
  // Started directly: the first sweep acts on every run before /readyz answers, so we cannot wait for it.
  const port = await freePort();
  const first = spawn(process.execPath, [BIN, '--root', d.path, '--halt', '1', '--web.listen-address', `127.0.0.1:${port}`], { stdio: 'ignore' });
  t.after(() => first.kill('SIGKILL'));
  await waitFor(() => dirs.some((dir) => existsSync(join(dir, '.HALT'))), 'the first .HALT', 20_000, 1);
  first.kill('SIGKILL');
  await new Promise((r) => first.once('exit', r));
  const doneBefore = dirs.filter((dir) => existsSync(join(dir, '.HALT'))).length;
  t.diagnostic(`killed with ${doneBefore} of ${RUNS} runs halted`);
  const second = await startTrainwatch(['--root', d.path, '--halt', '1']);
  t.after(() => second.stop());
  await waitFor(() => dirs.every((dir) => existsSync(join(dir, '.HALT'))), 'every run halted after the restart');
  let recovered = 0;
  for (const dir of dirs) {
    const audit = readFileSync(join(dir, '.trainwatch-audit.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, string>);
    assert.equal(1, audit.filter((e) => e.event === 'anomaly').length, `${dir}: one episode`);
    for (const action of ['anomaly_type', 'details', 'halt']) {
      const done = audit.filter((e) => e.event === 'action' && e.action === action && e.result !== 'failed');
      assert.equal(1, done.length, `${dir}: ${action} recorded once: ${JSON.stringify(done)}`);
    }
    // Only trainwatch wrote .HALT here: a kill between creating it and recording it must not
    // turn it into one found there ('exists'), which would lose the escalation that follows it.
    const halt = audit.find((e) => e.action === 'halt')!;
    assert.equal('ok', halt.result, `${dir}: .HALT recorded as written: ${JSON.stringify(halt)}`);
    if (halt.recovered) recovered++;
    assert.equal('nonfinite_loss\n', readFileSync(join(dir, '.anomaly_type'), 'utf8'));
    assert.equal('halt: nonfinite_loss\n', readFileSync(join(dir, '.HALT'), 'utf8'));
    assert.equal('nonfinite_loss', (JSON.parse(readFileSync(join(dir, '.anomaly.json'), 'utf8')) as { kind: string }).kind);
  }
  t.diagnostic(`${recovered} .HALT created before the kill and recorded after the restart`);
  assert.equal(true, doneBefore < RUNS, 'the kill landed while actions were still in flight');
});
