// The Alertmanager webhook on the real process: auth, HTTP semantics, safety, idempotency.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, rmSync, rmdirSync, symlinkSync, writeFileSync, appendFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { pyJson, scrape, startTrainwatch, tmpDir, type TrainwatchProc } from '../helpers/proc.js';

const TOKEN = 's3cret-token-for-tests';

function payload(alerts: Array<Record<string, unknown>>, extra: Record<string, unknown> = {}) {
  return {
    version: '4',
    groupKey: '{}:{alertname="x"}',
    truncatedAlerts: 0,
    status: 'firing',
    receiver: 'trainwatch',
    groupLabels: {},
    commonLabels: {},
    commonAnnotations: {},
    externalURL: 'http://am',
    notification_reason: 'new',
    ...extra,
    alerts,
  };
}
function alert(run: string, o: { status?: string; startsAt?: string; fingerprint?: string; kind?: string; halt?: string } = {}) {
  return {
    status: o.status ?? 'firing',
    labels: { alertname: 'TrainingHeartbeatStalled', run, rank: '0', anomaly_type: o.kind ?? 'heartbeat_stall', halt: o.halt ?? 'true', severity: 'critical' },
    annotations: { summary: 'stalled', description: `run ${run} rank 0 stalled` },
    startsAt: o.startsAt ?? '2026-11-28T10:00:00Z',
    endsAt: '0001-01-01T00:00:00Z',
    generatorURL: 'http://prom',
    fingerprint: o.fingerprint ?? 'fp1',
  };
}
async function post(tw: TrainwatchProc, body: unknown, auth: string | null = `Bearer ${TOKEN}`, raw = false) {
  const res = await fetch(`${tw.url}/webhook/alertmanager`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) },
    body: raw ? (body as string) : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json().catch(() => ({}))) as { alerts?: Array<{ result: string }>; error?: string } };
}
const auditOf = (dir: string) =>
  existsSync(join(dir, '.trainwatch-audit.jsonl'))
    ? readFileSync(join(dir, '.trainwatch-audit.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>)
    : [];

async function setup(t: { after(fn: () => unknown): void }, extraArgs: string[] = []) {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const root = join(d.path, 'runs');
  const run = join(root, 'exp1');
  mkdirSync(run, { recursive: true });
  appendFileSync(join(run, 'heartbeat_rank0.jsonl'), pyJson({ ts: Date.now() / 1000, rank: 0, step: 1, msg: 'progress' }) + '\n');
  writeFileSync(join(d.path, 'token'), TOKEN + '\n');
  const args = ['--root', root, '--mode', 'alertmanager', '--halt', '1', '--webhook.token-file', join(d.path, 'token'), ...extraArgs];
  const tw = await startTrainwatch(args);
  t.after(() => tw.stop());
  return { d, root, run, tw, args };
}

test('without any auth configured the webhook is disabled, says so, and writes nothing', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  mkdirSync(join(d.path, 'exp1'));
  const tw = await startTrainwatch(['--root', d.path, '--halt', '1']);
  t.after(() => tw.stop());
  const r = await post(tw, payload([alert('exp1')]), null);
  assert.equal(403, r.status);
  assert.match(r.body.error!, /--webhook\.token-file/);
  // Embedded mode does not need the webhook: said at debug level only, not as a misconfiguration.
  assert.match(tw.logs(), /level=debug msg="webhook \/webhook\/alertmanager is disabled/);
  assert.deepEqual([], readdirSync(join(d.path, 'exp1')));
});

test('in mode alertmanager a webhook without auth is a warning at startup, since nothing can act', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const tw = await startTrainwatch(['--root', d.path, '--mode', 'alertmanager']);
  t.after(() => tw.stop());
  assert.match(tw.logs(), /level=warn msg="webhook \/webhook\/alertmanager is disabled: no auth is configured\. Set --webhook\.token-file/);
});

test('a missing, wrong or wrong-length bearer token gets 401, never 500', async (t) => {
  const { tw, run } = await setup(t);
  for (const auth of [null, 'Bearer wrong-token-same-len!!', 'Bearer x', `Bearer ${TOKEN}${TOKEN}`, 'Basic Zm9vOmJhcg==', 'Bearer ']) {
    assert.equal(401, (await post(tw, payload([alert('exp1')]), auth)).status, String(auth));
  }
  assert.equal(false, existsSync(join(run, '.HALT')));
});

test('a firing halting alert writes .anomaly_type, .HALT and one audit entry; duplicates and 100 concurrent copies act once', async (t) => {
  const { tw, run } = await setup(t);
  const first = await post(tw, payload([alert('exp1')]));
  assert.equal(200, first.status);
  assert.equal('acted', first.body.alerts![0].result);
  assert.equal('heartbeat_stall\n', readFileSync(join(run, '.anomaly_type'), 'utf8'));
  assert.equal('halt: heartbeat_stall\n', readFileSync(join(run, '.HALT'), 'utf8'));
  const all = await Promise.all(Array.from({ length: 100 }, () => post(tw, payload([alert('exp1')]))));
  assert.deepEqual(
    Array(100).fill(200),
    all.map((r) => r.status),
  );
  assert.deepEqual(
    Array(100).fill('duplicate'),
    all.map((r) => r.body.alerts![0].result),
  );
  assert.equal(1, auditOf(run).filter((e) => e.event === 'anomaly').length);
  const m = await scrape(tw.url);
  assert.equal(100, m.get('trainwatch_webhook_alerts_total{result="duplicate"}'));
  assert.equal(1, m.get('trainwatch_webhook_alerts_total{result="acted"}'));
  assert.equal(101, m.get('trainwatch_webhook_requests_total{code="200"}'));
});

test('100 concurrent first deliveries of one new alert act exactly once', async (t) => {
  const { tw, run } = await setup(t);
  const all = await Promise.all(Array.from({ length: 100 }, () => post(tw, payload([alert('exp1', { fingerprint: 'conc' })]))));
  assert.equal(1, all.filter((r) => r.body.alerts![0].result === 'acted').length);
  assert.equal(1, auditOf(run).filter((e) => e.event === 'anomaly').length);
});

test('a resolved alert is recorded but never removes .HALT; a later re-fire is a new episode', async (t) => {
  const { tw, run } = await setup(t);
  await post(tw, payload([alert('exp1')]));
  const resolved = await post(tw, payload([alert('exp1', { status: 'resolved' })], { status: 'resolved' }));
  assert.equal('resolved', resolved.body.alerts![0].result);
  assert.equal(true, existsSync(join(run, '.HALT')));
  assert.equal('resolved_duplicate', (await post(tw, payload([alert('exp1', { status: 'resolved' })]))).body.alerts![0].result);
  const refire = await post(tw, payload([alert('exp1', { startsAt: '2026-11-28T11:00:00Z' })]));
  assert.equal('acted', refire.body.alerts![0].result);
  const events = auditOf(run)
    .filter((e) => e.event !== 'action')
    .map((e) => e.event);
  assert.deepEqual(['anomaly', 'resolved', 'anomaly'], events);
  // .HALT existed already: the new episode is audited, and nothing rewrites the control files.
  assert.deepEqual(
    ['ok'],
    auditOf(run)
      .filter((e) => e.action === 'halt')
      .map((e) => e.result),
  );
});

test('labels with traversal, separators, encodings or NUL are rejected and nothing is written anywhere', async (t) => {
  const { tw, root, d } = await setup(t);
  const before = JSON.stringify([readdirSync(d.path).sort(), readdirSync(root).sort(), readdirSync(join(root, 'exp1')).sort()]);
  for (const run of ['../exp1', '/etc', 'exp1/../../x', '..', '.', 'exp1%2f..', 'exp1\u0000', 'a\\b', '%2e%2e']) {
    const r = await post(tw, payload([alert(run)]));
    assert.equal(200, r.status, run);
    assert.equal('rejected', r.body.alerts![0].result, run);
  }
  assert.equal('not_ours', (await post(tw, payload([alert('someone-elses-run')]))).body.alerts![0].result);
  assert.equal(before, JSON.stringify([readdirSync(d.path).sort(), readdirSync(root).sort(), readdirSync(join(root, 'exp1')).sort()]));
});

test('payloads that can never be valid get 4xx: wrong version, malformed JSON, no alerts, oversize', async (t) => {
  const { tw } = await setup(t, ['--webhook.max-body-bytes', '2048']);
  assert.equal(400, (await post(tw, payload([alert('exp1')], { version: '3' }))).status);
  assert.equal(400, (await post(tw, '{"version": "4", "alerts": [', `Bearer ${TOKEN}`, true)).status);
  assert.equal(400, (await post(tw, { version: '4' })).status);
  assert.equal(400, (await post(tw, [1, 2])).status);
  const big = payload([alert('exp1')], { commonAnnotations: { x: 'y'.repeat(5000) } });
  assert.equal(413, (await post(tw, big)).status);
  const m = await scrape(tw.url);
  assert.equal(4, m.get('trainwatch_webhook_requests_total{code="400"}'));
  assert.equal(1, m.get('trainwatch_webhook_requests_total{code="413"}'));
});

test('a symlink planted at .HALT is not followed: its target is untouched and a real .HALT replaces the link', async (t) => {
  const { tw, run, d } = await setup(t);
  const victim = join(d.path, 'victim.txt');
  writeFileSync(victim, 'precious\n');
  symlinkSync(victim, join(run, '.HALT'));
  const r = await post(tw, payload([alert('exp1')]));
  assert.equal(200, r.status);
  assert.equal('precious\n', readFileSync(victim, 'utf8'));
  assert.equal(true, lstatSync(join(run, '.HALT')).isFile());
  assert.equal('replaced_non_regular', auditOf(run).find((e) => e.action === 'halt')!.result);
});

test('a failed write answers 5xx so Alertmanager retries, and the retry completes the action once', async (t) => {
  const { tw, run } = await setup(t);
  mkdirSync(join(run, '.anomaly_type')); // a directory where the file must go: the rename fails
  const r1 = await post(tw, payload([alert('exp1')]));
  assert.equal(500, r1.status);
  rmdirSync(join(run, '.anomaly_type'));
  const r2 = await post(tw, payload([alert('exp1')]));
  assert.equal(200, r2.status);
  assert.equal('heartbeat_stall\n', readFileSync(join(run, '.anomaly_type'), 'utf8'));
  assert.equal(1, auditOf(run).filter((e) => e.event === 'anomaly').length);
  assert.deepEqual(
    ['failed', 'ok'],
    auditOf(run)
      .filter((e) => e.action === 'anomaly_type')
      .map((e) => e.result),
  );
});

test('after kill -9 and a restart, a redelivered alert is still a duplicate (the audit log is the memory)', async (t) => {
  const { tw, run, args } = await setup(t);
  await post(tw, payload([alert('exp1')]));
  await tw.stop('SIGKILL');
  const tw2 = await startTrainwatch(args);
  t.after(() => tw2.stop());
  assert.equal('duplicate', (await post(tw2, payload([alert('exp1')]))).body.alerts![0].result);
  assert.equal(1, auditOf(run).filter((e) => e.event === 'anomaly').length);
});

test('a non-halting alert (halt="false") writes .anomaly_type but not .HALT', async (t) => {
  const { tw, run } = await setup(t);
  const r = await post(tw, payload([alert('exp1', { kind: 'fetch_stall', halt: 'false', fingerprint: 'f2' })]));
  assert.equal('acted', r.body.alerts![0].result);
  assert.equal('fetch_stall\n', readFileSync(join(run, '.anomaly_type'), 'utf8'));
  assert.equal(false, existsSync(join(run, '.HALT')));
});

test('basic auth from --web.config.file guards every endpoint and is accepted by the webhook', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  mkdirSync(join(d.path, 'exp1'));
  const wc = join(d.path, 'web.yml');
  writeFileSync(wc, `basic_auth_users:\n  alertmanager: ${bcrypt.hashSync('pw', 4)}\n`);
  const tw = await startTrainwatch(['--root', d.path, '--web.config.file', wc, '--mode', 'alertmanager']);
  t.after(() => tw.stop());
  assert.equal(401, (await fetch(`${tw.url}/metrics`)).status);
  const basic = 'Basic ' + Buffer.from('alertmanager:pw').toString('base64');
  assert.equal(200, (await fetch(`${tw.url}/metrics`, { headers: { authorization: basic } })).status);
  assert.equal(401, (await post(tw, payload([alert('exp1')]), 'Basic ' + Buffer.from('alertmanager:nope').toString('base64'))).status);
  assert.equal(200, (await post(tw, payload([alert('exp1')]), basic)).status);
});

test('the audit log deleted while trainwatch runs is re-created by the next delivery', async (t) => {
  const { tw, run } = await setup(t);
  assert.equal('acted', (await post(tw, payload([alert('exp1')]))).body.alerts![0].result);
  rmSync(join(run, '.trainwatch-audit.jsonl'));
  assert.equal('resolved', (await post(tw, payload([alert('exp1', { status: 'resolved' })]))).body.alerts![0].result);
  assert.deepEqual(
    ['resolved'],
    auditOf(run).map((e) => e.event),
  );
});

test('served outside express, the webhook answers as before: query string, WWW-Authenticate, web config headers, 400 and 413 messages, chunked and compressed bodies', async (t) => {
  const cfg = tmpDir();
  t.after(() => cfg.cleanup());
  writeFileSync(join(cfg.path, 'web.yml'), 'http_server_config:\n  headers:\n    X-Frame-Options: deny\n');
  const { tw } = await setup(t, ['--webhook.max-body-bytes', '2048', '--web.config.file', join(cfg.path, 'web.yml')]);
  const send = async (body: BodyInit, headers: Record<string, string> = {}, path = '/webhook/alertmanager?source=am&x') => {
    const res = await fetch(`${tw.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...headers },
      body,
      duplex: 'half',
    } as RequestInit);
    return { status: res.status, headers: res.headers, body: (await res.json()) as { error?: string; alerts?: Array<{ result: string }> } };
  };
  const unauth = await send(JSON.stringify(payload([alert('exp1')])), { authorization: 'Bearer nope' });
  assert.deepEqual(
    [401, 'Bearer', 'deny', 'unauthorized'],
    [unauth.status, unauth.headers.get('www-authenticate'), unauth.headers.get('x-frame-options'), unauth.body.error],
  );
  const ok = await send(JSON.stringify(payload([alert('exp1')])), { 'content-type': 'application/json' });
  assert.deepEqual(
    [200, 'acted', 'deny', 'application/json; charset=utf-8'],
    [ok.status, ok.body.alerts![0].result, ok.headers.get('x-frame-options'), ok.headers.get('content-type')],
  );
  const bad = await send('{"version": "4", "alerts": [');
  assert.deepEqual([400, 'body is not valid JSON', 'deny'], [bad.status, bad.body.error, bad.headers.get('x-frame-options')]);
  const big = JSON.stringify(payload([alert('exp1')], { commonAnnotations: { x: 'y'.repeat(5000) } }));
  const tooBig = await send(big);
  assert.deepEqual([413, 'body larger than --webhook.max-body-bytes (2048)'], [tooBig.status, tooBig.body.error]);
  // No Content-Length: the limit is counted while reading.
  const chunked = await send(new ReadableStream({ start: (c) => (c.enqueue(new TextEncoder().encode(big)), c.close()) }));
  assert.deepEqual([413, 'body larger than --webhook.max-body-bytes (2048)'], [chunked.status, chunked.body.error]);
  // Encodings the fast path leaves to express's body parser still work as they did.
  assert.equal('duplicate', (await send(gzipSync(JSON.stringify(payload([alert('exp1')]))), { 'content-encoding': 'gzip' })).body.alerts![0].result);
  assert.equal(415, (await send(JSON.stringify(payload([alert('exp1')])), { 'content-type': 'application/json; charset=latin1' })).status);
  const m = await scrape(tw.url);
  assert.deepEqual(
    [1, 2, 1, 2, 1],
    ['401', '200', '400', '413', '415'].map((c) => m.get(`trainwatch_webhook_requests_total{code="${c}"}`)),
  );
});

test('a delivery with the alerts of 8 ranks opens one episode that the other 7 join, and its resolution closes it; the audit log has them in order', async (t) => {
  const { tw, run } = await setup(t);
  const ranks = Array.from({ length: 8 }, (_, r) => ({ ...alert('exp1', { fingerprint: `r${r}` }), labels: { ...alert('exp1').labels, rank: String(r) } }));
  const fired = await post(tw, payload(ranks));
  assert.deepEqual(
    ['acted', ...Array(7).fill('joined')],
    fired.body.alerts!.map((a) => a.result),
  );
  assert.equal('halt: heartbeat_stall\n', readFileSync(join(run, '.HALT'), 'utf8'));
  const resolved = await post(tw, payload(ranks.map((a) => ({ ...a, status: 'resolved' }))));
  assert.deepEqual(
    Array(8).fill('resolved'),
    resolved.body.alerts!.map((a) => a.result),
  );
  const log = auditOf(run);
  assert.deepEqual(
    ['anomaly', 'action', 'action', 'action', ...Array(7).fill('joined'), ...Array(7).fill('alert_resolved'), 'resolved'],
    log.map((e) => e.event),
  );
  assert.deepEqual(
    ranks.map((a) => `${a.fingerprint}@${a.startsAt}`),
    log.filter((e) => e.event === 'anomaly' || e.event === 'joined').map((e) => e.key),
  );
  assert.equal(1, new Set(log.map((e) => e.episode)).size);
});

test('an audit log that cannot be written fails the delivery with 5xx, but the control files are still written: the halt matters more than its record', async (t) => {
  const { tw, run } = await setup(t);
  mkdirSync(join(run, '.trainwatch-audit.jsonl')); // a directory where the log must go
  const alerts = [alert('exp1', { fingerprint: 'a' }), alert('exp1', { fingerprint: 'b' }), alert('someone-elses-run')];
  const r = await post(tw, payload(alerts));
  assert.equal(500, r.status);
  assert.deepEqual(
    ['failed', 'failed', 'not_ours'],
    r.body.alerts!.map((a) => a.result),
  );
  assert.deepEqual(['.HALT', '.anomaly.json', '.anomaly_type', '.trainwatch-audit.jsonl', 'heartbeat_rank0.jsonl'], readdirSync(run).sort());
  // Alertmanager's retry finds the episode in memory: nothing to write, nothing to record.
  const retry = await post(tw, payload(alerts));
  assert.equal(200, retry.status);
  assert.deepEqual(
    ['duplicate', 'duplicate', 'not_ours'],
    retry.body.alerts!.map((a) => a.result),
  );
});
