import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { BIN, waitFor } from '../helpers/proc.js';

test('trainwatch demo: a newcomer sees the divergence caught, .HALT written and the trainer stop', { timeout: 120_000 }, () => {
  const r = spawnSync(process.execPath, [BIN, 'demo'], { encoding: 'utf8', timeout: 110_000 });
  assert.equal(0, r.status, r.stdout + r.stderr);
  assert.match(r.stdout, /\[demo\] trainwatch detected: nonfinite_loss on rank \d/);
  assert.match(r.stdout, /\[demo\] trainer exited \(code 0\)/);
  assert.match(r.stdout, /\[demo\] \.anomaly_type: nonfinite_loss/);
  assert.match(r.stdout, /\[demo\] \.HALT: +halt: nonfinite_loss/);
  // The page's URL dies with the demo: the line right after it says so and names --keep.
  assert.match(r.stdout, /\[demo\] trainwatch status page: http:\/\/\S+\/ .*\n\[demo\] both stop when the demo ends; run `trainwatch demo --keep`/);
});

test('trainwatch demo --keep: the status page it printed is still served after the trainer stopped, until Ctrl-C', { timeout: 120_000 }, async (t) => {
  const p = spawn(process.execPath, [BIN, 'demo', '--keep'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
  t.after(() => p.kill('SIGKILL'));
  await waitFor(() => out.includes('--keep: still serving'), 'the demo to finish and keep serving', 110_000, 100).catch((e: Error) =>
    assert.fail(`${e.message}\n${out}`),
  );
  assert.match(out, /\[demo\] trainer exited/);
  const url = /status page: (http:\/\/\S+\/)/.exec(out)![1];
  const page = await fetch(url);
  assert.equal(200, page.status);
  assert.match(await page.text(), /demo_run/);
  p.kill('SIGINT');
  assert.equal(0, await exited);
});

test('trainwatch demo --fault with an unknown fault names the choices', () => {
  const r = spawnSync(process.execPath, [BIN, 'demo', '--fault', 'meteor'], { encoding: 'utf8' });
  assert.equal(2, r.status);
  assert.match(r.stderr, /unknown --fault 'meteor'; choose one of nonfinite_loss, /);
});
