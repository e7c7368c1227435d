// Hostile HTTP clients and hostile web config on the real process: cross-site posts, password
// guessing, client certificates, bad headers, FIFOs as config files, idle connections.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { pyJson, scrape, startTrainwatch, tmpDir } from '../helpers/proc.js';

function payload(run: string) {
  return {
    version: '4', groupKey: '{}:{alertname="x"}', truncatedAlerts: 0, status: 'firing', receiver: 'trainwatch', groupLabels: {}, commonLabels: {}, commonAnnotations: {}, externalURL: 'http://am',
    alerts: [{ status: 'firing', labels: { alertname: 'TrainingHeartbeatStalled', run, rank: '0', anomaly_type: 'heartbeat_stall', halt: 'true' }, annotations: {}, startsAt: '2026-11-28T10:00:00Z', endsAt: '0001-01-01T00:00:00Z', generatorURL: '', fingerprint: 'fp1' }],
  };
}

/** A root with one run `exp1` that has a heartbeat; trainwatch acts only on webhook posts. */
async function webhookSetup(t: { after(fn: () => unknown): void }, extra: string[] = []) {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const run = join(d.path, 'exp1');
  mkdirSync(run);
  appendFileSync(join(run, 'heartbeat_rank0.jsonl'), pyJson({ ts: Date.now() / 1000, rank: 0, step: 1, msg: 'progress' }) + '\n');
  const tw = await startTrainwatch(['--root', d.path, '--mode', 'alertmanager', '--halt', '1', ...extra]);
  t.after(() => tw.stop());
  return { d, run, tw };
}

test('a cross-site form post (text/plain) or a post without a Content-Type gets 415 and writes no .HALT, even with auth switched off', async (t) => {
  const { run, tw } = await webhookSetup(t, ['--webhook.allow-unauthenticated']);
  const body = JSON.stringify(payload('exp1'));
  // What <form enctype="text/plain"> and fetch(no-cors) with a string body send.
  const types: Array<Record<string, string>> = [{ 'content-type': 'text/plain' }, { 'content-type': 'application/x-www-form-urlencoded' }, { 'content-type': 'multipart/form-data; boundary=x' }, { 'content-type': 'application/json; foo=bar' }, {}];
  for (const headers of types) {
    const res = await fetch(`${tw.url}/webhook/alertmanager`, { method: 'POST', headers, body: new Blob([body]) });
    const got = (await res.json()) as { error: string };
    assert.equal(415, res.status, JSON.stringify(headers));
    assert.match(got.error, /application\/json/);
  }
  assert.equal(false, existsSync(join(run, '.HALT')));
  assert.equal(5, (await scrape(tw.url)).get('trainwatch_webhook_requests_total{code="415"}'));
  // Alertmanager's own request still acts.
  const ok = await fetch(`${tw.url}/webhook/alertmanager`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  assert.equal(200, ok.status);
  assert.equal(true, existsSync(join(run, '.HALT')));
});

test('a browser post from another origin gets 403 even as JSON; the same origin and no Origin (Alertmanager) are accepted', async (t) => {
  const { run, tw } = await webhookSetup(t, ['--webhook.allow-unauthenticated']);
  const send = (headers: Record<string, string>) => fetch(`${tw.url}/webhook/alertmanager`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(payload('exp1')) });
  const hostile: Array<Record<string, string>> = [{ origin: 'http://evil.example' }, { origin: 'null' }, { origin: `https://127.0.0.1:${tw.port}` }, { 'sec-fetch-site': 'cross-site' }, { 'sec-fetch-site': 'same-site' }];
  for (const h of hostile) {
    const res = await send(h);
    assert.equal(403, res.status, JSON.stringify(h));
    assert.match(((await res.json()) as { error: string }).error, /cross-(origin|site) request/);
  }
  assert.equal(false, existsSync(join(run, '.HALT')));
  assert.equal(200, (await send({ origin: `http://127.0.0.1:${tw.port}`, 'sec-fetch-site': 'same-origin' })).status);
  assert.equal(true, existsSync(join(run, '.HALT')));
});
