import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { BIN } from '../helpers/proc.js';

test('trainwatch demo: a newcomer sees the divergence caught, .HALT written and the trainer stop', { timeout: 120_000 }, () => {
  const r = spawnSync(process.execPath, [BIN, 'demo'], { encoding: 'utf8', timeout: 110_000 });
  assert.equal(0, r.status, r.stdout + r.stderr);
  assert.match(r.stdout, /\[demo\] trainwatch detected: nonfinite_loss on rank \d/);
  assert.match(r.stdout, /\[demo\] trainer exited \(code 0\)/);
  assert.match(r.stdout, /\[demo\] \.anomaly_type: nonfinite_loss/);
  assert.match(r.stdout, /\[demo\] \.HALT: +halt: nonfinite_loss/);
});

test('trainwatch demo --fault with an unknown fault names the choices', () => {
  const r = spawnSync(process.execPath, [BIN, 'demo', '--fault', 'meteor'], { encoding: 'utf8' });
  assert.equal(2, r.status);
  assert.match(r.stderr, /unknown --fault 'meteor'; choose one of nonfinite_loss, /);
});
