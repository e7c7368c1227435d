// Hostile HTTP clients and hostile web config on the real process: cross-site posts, password
// guessing, client certificates, bad headers, FIFOs as config files, idle connections.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { parseExposition, pyJson, scrape, startTrainwatch, tmpDir } from '../helpers/proc.js';

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

test('64 concurrent wrong passwords are compared off the event loop: /healthz answers while they are in flight, the excess gets 503 with Retry-After, and all are counted', { timeout: 90_000 }, async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  writeFileSync(join(d.path, 'web.yml'), `basic_auth_users:\n  prometheus: ${bcrypt.hashSync('right', 10)}\n`);
  const tw = await startTrainwatch(['--root', d.path, '--web.config.file', join(d.path, 'web.yml')]);
  t.after(() => tw.stop());
  const basic = (user: string, pw: string) => ({ authorization: 'Basic ' + Buffer.from(`${user}:${pw}`).toString('base64') });
  const metrics = async () => {
    const res = await fetch(`${tw.url}/metrics`, { headers: basic('prometheus', 'right') });
    assert.equal(200, res.status);
    return parseExposition(await res.text());
  };
  assert.equal(1, (await metrics()).get('trainwatch_http_basic_auth_bcrypt_total'));
  let rejected = 0;
  let firstBusy!: () => void;
  const busyNow = new Promise<void>((r) => (firstBusy = r));
  const attempts = Array.from({ length: 64 }, async (_, i) => {
    const res = await fetch(`${tw.url}/metrics`, { headers: basic('prometheus', `wrong-${i}`) });
    await res.text();
    if (res.status === 503) firstBusy();
    if (res.status === 401) rejected++;
    return { status: res.status, retryAfter: res.headers.get('retry-after') };
  });
  // A 503 means every comparison slot is taken: ask /healthz now, on a connection of its own.
  await busyNow;
  const sent = Date.now();
  const health = await rawGet(tw.port, '/healthz');
  const healthMs = Date.now() - sent;
  const rejectedBefore = rejected;
  const results = await Promise.all(attempts);
  const busy = results.filter((r) => r.status === 503);
  assert.equal(200, health.status);
  assert.equal(64, rejected + busy.length, JSON.stringify(results.map((r) => r.status)));
  assert.equal(true, rejectedBefore < rejected, `/healthz was answered only after all ${rejected} comparisons had finished`);
  assert.deepEqual(busy.map(() => '1'), busy.map((r) => r.retryAfter));
  t.diagnostic(`401: ${rejected}, 503: ${busy.length}; /healthz answered in ${healthMs} ms, with ${rejected - rejectedBefore} comparisons still to finish`);
  const after = await metrics();
  assert.equal(1 + rejected, after.get('trainwatch_http_basic_auth_bcrypt_total'), 'one comparison per 401; the right password came from the cache');
  assert.equal(rejected, after.get('trainwatch_http_basic_auth_total{result="rejected"}'));
  assert.equal(busy.length, after.get('trainwatch_http_basic_auth_total{result="throttled"}'));
  assert.equal(2, after.get('trainwatch_http_basic_auth_total{result="accepted"}'));
});

/** A GET on a fresh connection of its own (fetch would queue it behind the pool's busy ones). */
function rawGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpGet({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

test('an unknown user costs a full bcrypt comparison (against a decoy hash), like a known user with a wrong password', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  writeFileSync(join(d.path, 'web.yml'), `basic_auth_users:\n  prometheus: ${bcrypt.hashSync('right', 4)}\n`);
  const tw = await startTrainwatch(['--root', d.path, '--web.config.file', join(d.path, 'web.yml')]);
  t.after(() => tw.stop());
  const get = (user: string, pw: string) => fetch(`${tw.url}/api/status`, { headers: { authorization: 'Basic ' + Buffer.from(`${user}:${pw}`).toString('base64') } });
  const bcryptRuns = async () => {
    const text = await (await fetch(`${tw.url}/metrics`, { headers: { authorization: 'Basic ' + Buffer.from('prometheus:right').toString('base64') } })).text();
    return Number(text.match(/^trainwatch_http_basic_auth_bcrypt_total (\d+)$/m)![1]);
  };
  const start = await bcryptRuns();
  const known = await get('prometheus', 'wrong');
  const unknown = await get('nobody', 'wrong');
  assert.deepEqual([401, 401], [known.status, unknown.status]);
  assert.equal(await known.text(), await unknown.text());
  assert.equal(start + 2, await bcryptRuns());
});
