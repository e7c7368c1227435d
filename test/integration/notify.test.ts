// Notifications end to end: the real trainwatch runs a real command and POSTs to a real HTTP
// server on loopback, driven by the simulated trainer's faults.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { freePort, pyJson, scrape, startSimTrainer, startTrainwatch, teardown, tmpDir, waitFor } from '../helpers/proc.js';

const FAST = { NSA_WATCH_FLATLINE_N: '3', NSA_WATCH_INTERVAL_S: '1', TRAINWATCH_SWEEP_INTERVAL_S: '0.5' };
const audit = (dir: string) =>
  existsSync(join(dir, '.trainwatch-audit.jsonl'))
    ? readFileSync(join(dir, '.trainwatch-audit.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>)
    : [];
/** Each invocation's TRAINWATCH_* environment, in the order they ran. */
const invocations = (out: string) =>
  readdirSync(out)
    .filter((f) => f.endsWith('.env'))
    .sort()
    .map((f) =>
      Object.fromEntries(
        readFileSync(join(out, f), 'utf8')
          .trim()
          .split('\n')
          .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
      ),
    );

/** A temp root with a run directory in it, removed after the test. */
function runDir(t: Parameters<typeof teardown>[0]) {
  const d = tmpDir();
  const later = teardown(t);
  later(() => d.cleanup());
  return { d, later, dir: join(d.path, 'run') };
}

test('a notification command runs exactly once per episode across a trainwatch restart, with the documented environment', { timeout: 90_000 }, async (t) => {
  const { d, later, dir } = runDir(t);
  const out = join(d.path, 'calls');
  const script = join(d.path, 'record.sh');
  // The guide's handler, as a command: one file per invocation, named so that they sort in order.
  writeFileSync(script, 'n=$(ls "$1" | wc -l); env | grep "^TRAINWATCH_" | sort > "$1/tmp.$$"; mv "$1/tmp.$$" "$1/$(printf %03d "$n").env"\n');
  mkdirSync(out);
  const args = ['--root', d.path, '--halt', '1', '--notify.exec', `sh ${script} ${out}`, '--notify.on-resolve', '1', '--notify.exec-concurrency', '1'];
  const sim = startSimTrainer(['--dir', dir, '--ranks', '2', '--step-s', '0.03', '--quiet', '--fault', 'throughput_flatline', '--fault-at', '10']);
  later(() => sim.kill());
  const tw = await startTrainwatch(args, FAST);
  later(() => tw.stop());
  assert.equal(0, await sim.exited); // stopped at .HALT
  const first = await waitFor(() => invocations(out)[0], 'the command to run');
  assert.deepEqual(
    {
      TRAINWATCH_EVENT: 'opened',
      TRAINWATCH_RUN: 'run',
      TRAINWATCH_DIR: dir,
      TRAINWATCH_KIND: 'throughput_flatline',
      TRAINWATCH_SEVERITY: 'critical',
      TRAINWATCH_HALTED: '1',
      TRAINWATCH_STATE: 'halt_requested',
    },
    Object.fromEntries(
      ['TRAINWATCH_EVENT', 'TRAINWATCH_RUN', 'TRAINWATCH_DIR', 'TRAINWATCH_KIND', 'TRAINWATCH_SEVERITY', 'TRAINWATCH_HALTED', 'TRAINWATCH_STATE'].map((k) => [
        k,
        first[k],
      ]),
    ),
  );
  assert.match(first.TRAINWATCH_RANK, /^[01]$/);
  assert.match(first.TRAINWATCH_MESSAGE, /toks_per_s <= 0 in 3 progress records in a row/);
  await waitFor(() => audit(dir).some((e) => e.action === 'notified_exec' && e.result === 'ok'), 'notified_exec in the audit log');
  await tw.stop('SIGKILL');
  const tw2 = await startTrainwatch(args, FAST);
  later(() => tw2.stop());
  // The sentinel: throughput comes back on every rank and in training.csv, so the episode that
  // was open before the restart resolves; its `resolved` call is the next one after any repeat.
  const pid = (JSON.parse(readFileSync(join(dir, 'heartbeat_rank0.jsonl'), 'utf8').trim().split('\n').pop()!) as { pid: number }).pid;
  for (const rank of [0, 1])
    appendFileSync(
      join(dir, `heartbeat_rank${rank}.jsonl`),
      pyJson({ ts: Date.now() / 1000, rank, step: 9999, msg: 'progress', loss: 2.5, toks_per_s: 12000, pid }) + '\n',
    );
  appendFileSync(join(dir, 'training.csv'), '9999,2.5,0.001,12000\n');
  await waitFor(() => invocations(out).length >= 2, 'the resolved call');
  assert.deepEqual(
    ['opened:throughput_flatline', 'resolved:throughput_flatline'],
    invocations(out).map((e) => `${e.TRAINWATCH_EVENT}:${e.TRAINWATCH_KIND}`),
  );
  assert.equal(1, audit(dir).filter((e) => e.event === 'anomaly').length);
});

test('a hanging notification command does not delay .HALT; it is killed at its timeout and counted', { timeout: 60_000 }, async (t) => {
  const { d, later, dir } = runDir(t);
  const marker = join(d.path, 'started');
  const sim = startSimTrainer(['--dir', dir, '--ranks', '2', '--step-s', '0.03', '--quiet', '--fault', 'zero_grad', '--fault-at', '10']);
  later(() => sim.kill());
  // The command hangs far longer than the test; only its timeout ends it.
  const tw = await startTrainwatch(
    ['--root', d.path, '--halt', '1', '--notify.exec', `touch ${marker} ; sleep 600`, '--notify.shell', '1', '--notify.exec-timeout-s', '3'],
    FAST,
  );
  later(() => tw.stop());
  await waitFor(() => existsSync(marker), 'the command to start');
  assert.equal('halt: zero_grad\n', readFileSync(join(dir, '.HALT'), 'utf8'));
  const a = audit(dir);
  assert.equal(
    undefined,
    a.find((e) => String(e.action).startsWith('notified_')),
    'the command still runs',
  );
  const opened = a.find((e) => e.event === 'anomaly')!.ts as number;
  const halted = statSync(join(dir, '.HALT')).mtimeMs / 1000;
  t.diagnostic(
    `.HALT written ${((halted - opened) * 1000).toFixed(1)} ms after the episode opened; the command started ${((statSync(marker).mtimeMs / 1000 - halted) * 1000).toFixed(1)} ms after .HALT and hangs`,
  );
  assert.equal(0, await sim.exited); // the trainer stopped at .HALT while the command hangs
  await waitFor(() => audit(dir).some((e) => e.action === 'notified_exec' && e.result === 'timeout'), 'the timeout in the audit log');
  assert.equal(1, (await scrape(tw.url)).get('trainwatch_notifications_total{channel="exec",result="timeout"}'));
});

test('a webhook receiver that fails twice and then succeeds gets exactly one delivery, with the bearer token from its file', { timeout: 60_000 }, async (t) => {
  const { d, later, dir } = runDir(t);
  const got: Array<{ status: number; auth?: string; body: string }> = [];
  const port = await freePort();
  const server = createServer((req: IncomingMessage, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const status = got.length < 2 ? 503 : 200;
      got.push({ status, auth: req.headers.authorization, body });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  later(() => new Promise((r) => server.close(r)));
  writeFileSync(join(d.path, 'token'), 's3cret\n');
  const sim = startSimTrainer(['--dir', dir, '--ranks', '2', '--step-s', '0.03', '--quiet', '--fault', 'zero_grad', '--fault-at', '10']);
  later(() => sim.kill());
  const tw = await startTrainwatch(
    [
      '--root',
      d.path,
      '--halt',
      '1',
      '--notify.webhook',
      `http://127.0.0.1:${port}/hook`,
      '--notify.webhook-token-file',
      join(d.path, 'token'),
      '--notify.webhook-backoff-s',
      '0.05',
    ],
    FAST,
  );
  later(() => tw.stop());
  await waitFor(() => audit(dir).some((e) => e.action === 'notified_webhook'), 'the delivery in the audit log');
  assert.deepEqual(
    [503, 503, 200],
    got.map((g) => g.status),
  );
  assert.deepEqual(['Bearer s3cret'], [...new Set(got.map((g) => g.auth))]);
  const event = JSON.parse(got[2].body) as Record<string, unknown>;
  assert.deepEqual(
    [1, 'opened', 'run', 'zero_grad', 'critical', true, 'halt_requested'],
    [event.version, event.event, event.run, event.kind, event.severity, event.halted, event.state],
  );
  assert.deepEqual(
    ['ok'],
    audit(dir)
      .filter((e) => e.action === 'notified_webhook')
      .map((e) => e.result),
  );
  const m = await scrape(tw.url);
  assert.deepEqual(
    [2, 1],
    [m.get('trainwatch_notifications_total{channel="webhook",result="retry"}'), m.get('trainwatch_notifications_total{channel="webhook",result="ok"}')],
  );
});

test('when a webhook queue is full the oldest waiting event is dropped, counted and audited; the rest are delivered', { timeout: 60_000 }, async (t) => {
  const { d, later } = runDir(t);
  // Three runs whose ranks went silent long ago: three heartbeat_stall episodes at start-up.
  for (const name of ['a', 'b', 'c']) {
    mkdirSync(join(d.path, name));
    const ts = Date.now() / 1000 - 1000;
    writeFileSync(
      join(d.path, name, 'heartbeat_rank0.jsonl'),
      [
        pyJson({ ts, rank: 0, step: 0, msg: 'boot', pid: 4194305 }),
        pyJson({ ts: ts + 1, rank: 0, step: 1, msg: 'progress', loss: 3, toks_per_s: 100, pid: 4194305 }),
      ].join('\n') + '\n',
    );
  }
  const held: Array<() => void> = [];
  let received = 0;
  const port = await freePort();
  // The receiver holds every request until released: the first event is in flight, the others wait.
  const server = createServer((req, res) => {
    received++;
    req.resume();
    held.push(() => res.writeHead(200).end());
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  later(() => new Promise((r) => server.close(r)));
  later(() => held.forEach((release) => release()));
  const tw = await startTrainwatch(
    ['--root', d.path, '--notify.webhook', `http://127.0.0.1:${port}/`, '--notify.queue', '1', '--notify.webhook-timeout-s', '60'],
    FAST,
  );
  later(() => tw.stop());
  await waitFor(async () => (await scrape(tw.url)).get('trainwatch_notifications_total{channel="webhook",result="dropped"}') === 1, 'one event dropped');
  assert.equal(1, received);
  held.shift()!();
  await waitFor(() => received === 2, 'the newest event delivered');
  held.shift()!();
  const results = await waitFor(() => {
    const r = ['a', 'b', 'c'].flatMap((n) =>
      audit(join(d.path, n))
        .filter((e) => e.action === 'notified_webhook')
        .map((e) => e.result as string),
    );
    return r.length === 3 ? r.sort() : undefined;
  }, 'every event audited');
  assert.deepEqual(['dropped', 'ok', 'ok'], results);
});
