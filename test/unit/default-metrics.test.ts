// prom-client's defaults as trainwatch serves them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, readdirSync } from 'node:fs';
import { defaultMetrics } from '../../src/metrics/defaults.js';
import { parseExposition } from '../helpers/proc.js';

test('process_open_fds counts the descriptors the process holds, as a listing of /proc/self/fd does', async () => {
  const registry = defaultMetrics();
  const open = async () => parseExposition(await registry.metrics()).get('process_open_fds')!;
  const before = await open();
  const fds = Array.from({ length: 50 }, () => openSync('/dev/null', 'r'));
  try {
    const during = await open();
    assert.equal(50, during - before);
    // The listing itself holds one descriptor while it runs.
    assert.equal(readdirSync('/proc/self/fd').length - 1, during);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
  assert.equal(before, await open());
});

test('the prom-client gauges that promtool rejects (names ending in _total) are not served', async () => {
  const text = await defaultMetrics().metrics();
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'])
    assert.equal(false, text.includes(name), name);
  assert.equal(true, text.includes('\nnodejs_eventloop_lag_max_seconds '));
});
