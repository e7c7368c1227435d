// Hostile HTTP clients and hostile web config on the real process: cross-site posts, password
// guessing, client certificates, bad headers, FIFOs as config files, idle connections.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { get as httpGet } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { BIN, freePort, parseExposition, pyJson, requireBinary, scrape, startTrainwatch, tmpDir, waitFor } from '../helpers/proc.js';
import { BCRYPT_MAX_IN_FLIGHT } from '../../src/http/webconfig.js';

function payload(run: string) {
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
    alerts: [
      {
        status: 'firing',
        labels: { alertname: 'TrainingHeartbeatStalled', run, rank: '0', anomaly_type: 'heartbeat_stall', halt: 'true' },
        annotations: {},
        startsAt: '2026-11-28T10:00:00Z',
        endsAt: '0001-01-01T00:00:00Z',
        generatorURL: '',
        fingerprint: 'fp1',
      },
    ],
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
  const types: Array<Record<string, string>> = [
    { 'content-type': 'text/plain' },
    { 'content-type': 'application/x-www-form-urlencoded' },
    { 'content-type': 'multipart/form-data; boundary=x' },
    { 'content-type': 'application/json; foo=bar' },
    {},
  ];
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
  const send = (headers: Record<string, string>) =>
    fetch(`${tw.url}/webhook/alertmanager`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(payload('exp1')),
    });
  const hostile: Array<Record<string, string>> = [
    { origin: 'http://evil.example' },
    { origin: 'null' },
    { origin: `https://127.0.0.1:${tw.port}` },
    { 'sec-fetch-site': 'cross-site' },
    { 'sec-fetch-site': 'same-site' },
  ];
  for (const h of hostile) {
    const res = await send(h);
    assert.equal(403, res.status, JSON.stringify(h));
    assert.match(((await res.json()) as { error: string }).error, /cross-(origin|site) request/);
  }
  assert.equal(false, existsSync(join(run, '.HALT')));
  assert.equal(200, (await send({ origin: `http://127.0.0.1:${tw.port}`, 'sec-fetch-site': 'same-origin' })).status);
  assert.equal(true, existsSync(join(run, '.HALT')));
});

test(
  '64 concurrent wrong passwords are compared off the event loop: /healthz answers while they are in flight, the excess gets 503 with Retry-After, and all are counted',
  { timeout: 90_000 },
  async (t) => {
    const d = tmpDir();
    t.after(() => d.cleanup());
    // Cost 12 (about 250 ms a comparison): the four admitted comparisons outlast the arrival of
    // all 64 requests even when this test process is slowed down by a loaded machine.
    writeFileSync(join(d.path, 'web.yml'), `basic_auth_users:\n  prometheus: ${bcrypt.hashSync('right', 12)}\n`);
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
    // If none ever comes, the test fails below on the count of 503s instead of hanging here.
    void Promise.allSettled(attempts).then(() => firstBusy());
    await busyNow;
    const sent = Date.now();
    const health = await rawGet(tw.port, '/healthz');
    const healthMs = Date.now() - sent;
    const rejectedBefore = rejected;
    const results = await Promise.all(attempts);
    const busy = results.filter((r) => r.status === 503);
    assert.equal(200, health.status);
    assert.equal(64, rejected + busy.length, JSON.stringify(results.map((r) => r.status)));
    assert.equal(true, busy.length > 0, `no request was answered 503 while ${BCRYPT_MAX_IN_FLIGHT} comparisons were in flight`);
    assert.equal(true, rejectedBefore < rejected, `/healthz was answered only after all ${rejected} comparisons had finished`);
    assert.deepEqual(
      busy.map(() => '1'),
      busy.map((r) => r.retryAfter),
    );
    t.diagnostic(
      `401: ${rejected}, 503: ${busy.length}; /healthz round trip as the (busy) test process saw it: ${healthMs} ms, with ${rejected - rejectedBefore} comparisons still to finish`,
    );
    const after = await metrics();
    assert.equal(1 + rejected, after.get('trainwatch_http_basic_auth_bcrypt_total'), 'one comparison per 401; the right password came from the cache');
    assert.equal(rejected, after.get('trainwatch_http_basic_auth_total{result="rejected"}'));
    assert.equal(busy.length, after.get('trainwatch_http_basic_auth_total{result="throttled"}'));
    assert.equal(2, after.get('trainwatch_http_basic_auth_total{result="accepted"}'));
  },
);

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
  const get = (user: string, pw: string) =>
    fetch(`${tw.url}/api/status`, { headers: { authorization: 'Basic ' + Buffer.from(`${user}:${pw}`).toString('base64') } });
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

/** Real certificates from openssl: a CA, a server certificate, a client certificate from the CA, and a self-signed client one. */
function certificates(dir: string) {
  const openssl = requireBinary('openssl', 'openssl');
  const run = (...args: string[]) => {
    const r = spawnSync(openssl, args, { encoding: 'utf8', cwd: dir });
    assert.equal(0, r.status, r.stderr);
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=trainwatch-test-ca');
  run('req', '-x509', ...ec, '-keyout', 'server.key', '-out', 'server.crt', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1');
  run('req', ...ec, '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=prometheus');
  run('x509', '-req', '-in', 'client.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.crt', '-days', '1');
  run('req', '-x509', ...ec, '-keyout', 'rogue.key', '-out', 'rogue.crt', '-days', '1', '-subj', '/CN=rogue');
  const f = (n: string) => readFileSync(join(dir, n));
  return { serverCa: f('server.crt'), valid: { cert: f('client.crt'), key: f('client.key') }, rogue: { cert: f('rogue.crt'), key: f('rogue.key') } };
}

/** One HTTPS GET on a fresh connection; 'refused' if the server closed it or failed the handshake. */
function tlsGet(port: number, path: string, ca: Buffer, client?: { cert: Buffer; key: Buffer }): Promise<{ status: number; body: string } | 'refused'> {
  return new Promise((resolve) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path, ca, servername: 'localhost', agent: false, ...client }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve('refused'));
    });
    req.on('error', () => resolve('refused'));
    req.end();
  });
}

// Expected outcome per client: none, a self-signed certificate, one the client CA signed.
const CLIENT_AUTH: Array<[string, boolean, [string, string, string]]> = [
  ['NoClientCert', false, ['served', 'served', 'served']],
  ['RequestClientCert', true, ['served', 'served', 'served']],
  ['RequireAnyClientCert', true, ['refused', 'served', 'served']],
  ['VerifyClientCertIfGiven', true, ['served', 'refused', 'served']],
  ['RequireAndVerifyClientCert', true, ['refused', 'refused', 'served']],
];
for (const [auth, withCa, expected] of CLIENT_AUTH) {
  test(
    `client_auth_type ${auth}: no certificate is ${expected[0]}, a self-signed one ${expected[1]}, one from the client CA ${expected[2]}, and refusals are counted`,
    { timeout: 120_000 },
    async (t) => {
      const d = tmpDir();
      t.after(() => d.cleanup());
      const c = certificates(d.path);
      // Relative paths: exporter-toolkit resolves them against the web config's directory.
      writeFileSync(
        join(d.path, 'web.yml'),
        `tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n${withCa ? '  client_ca_file: ca.crt\n' : ''}  client_auth_type: ${auth}\n`,
      );
      const port = await freePort();
      const proc = spawn(process.execPath, [BIN, '--root', d.path, '--web.config.file', join(d.path, 'web.yml'), '--web.listen-address', `127.0.0.1:${port}`], {
        stdio: 'ignore',
      });
      t.after(() => proc.kill('SIGKILL'));
      // Generous: only a start that never comes should fail here (the machine may be busy).
      await waitFor(async () => (await tlsGet(port, '/healthz', c.serverCa, c.valid)) !== 'refused', 'trainwatch to serve HTTPS', 60_000, 100);
      const got: string[] = [];
      for (const client of [undefined, c.rogue, c.valid]) {
        const r = await tlsGet(port, '/healthz', c.serverCa, client);
        got.push(r === 'refused' ? 'refused' : r.status === 200 ? 'served' : `status ${r.status}`);
      }
      assert.deepEqual(expected, got);
      const m = await tlsGet(port, '/metrics', c.serverCa, c.valid);
      assert.notEqual('refused', m);
      const metrics = parseExposition((m as { body: string }).body);
      const refused = expected.filter((e) => e === 'refused').length;
      const counted =
        metrics.get('trainwatch_http_connections_refused_total{reason="client_cert"}')! +
        metrics.get('trainwatch_http_connections_refused_total{reason="tls_handshake"}')!;
      assert.equal(refused, counted);
    },
  );
}

/** Starts trainwatch with `args` and asserts that it exits 2 at once with `msg` and no stack trace. */
function assertRefusedStart(args: string[], msg: RegExp): void {
  const r = spawnSync(process.execPath, [BIN, ...args, '--web.listen-address', '127.0.0.1:0'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(2, r.status, `exit ${r.status} (signal ${r.signal}): ${r.stderr}`);
  assert.match(r.stderr, msg);
  assert.equal(false, r.stderr.includes('    at '));
}

const BAD_WEB_CONFIGS: Array<[string, string, RegExp]> = [
  [
    'an unknown key in tls_server_config',
    'tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  ciphers: [x]\n',
    /unknown key 'ciphers' in tls_server_config; accepted: cert_file, key_file, .*client_auth_type/,
  ],
  [
    'an unknown key in http_server_config',
    'http_server_config:\n  header:\n    X-Frame-Options: deny\n',
    /unknown key 'header' in http_server_config; accepted: headers, http2/,
  ],
  [
    'an unknown top-level key',
    'basic_auth_user:\n  a: b\n',
    /unknown key 'basic_auth_user'; accepted: tls_server_config, http_server_config, basic_auth_users/,
  ],
  ['a user mapped to a mapping instead of a hash', 'basic_auth_users:\n  admin:\n    hash: x\n', /basic_auth_users\.admin must be a bcrypt hash/],
  [
    'an exporter-toolkit key trainwatch does not implement',
    'tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n',
    /'cipher_suites' is an exporter-toolkit key that trainwatch does not implement; remove it/,
  ],
  [
    'a client CA but no client_auth_type',
    'tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_ca_file: a.crt\n',
    /client_auth_type is NoClientCert \(the default\).*set client_auth_type: RequireAndVerifyClientCert/,
  ],
  [
    'an unknown client_auth_type',
    'tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_auth_type: VerifyAlways\n',
    /client_auth_type 'VerifyAlways'; accepted: NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert/,
  ],
];
for (const [name, yaml, msg] of BAD_WEB_CONFIGS) {
  test(`a web config with ${name} stops trainwatch with exit 2, naming the key and what is accepted`, () => {
    const d = tmpDir();
    try {
      // Valid files behind the names, so that only the key under test can be the error.
      writeFileSync(join(d.path, 'a.crt'), '');
      writeFileSync(join(d.path, 'a.key'), '');
      writeFileSync(join(d.path, 'web.yml'), yaml);
      assertRefusedStart(['--root', d.path, '--web.config.file', join(d.path, 'web.yml')], msg);
    } finally {
      d.cleanup();
    }
  });
}

const BAD_HEADERS: Array<[string, string, RegExp]> = [
  ['an invalid header name', '    "X Bad Header": "1"\n', /header "X Bad Header" is not a valid HTTP header name/],
  [
    'a header value with a line break',
    '    Content-Security-Policy: "default-src \'self\'\\r\\nSet-Cookie: a=b"\n',
    /header "Content-Security-Policy" has a value that is not valid in HTTP/,
  ],
  [
    'a header exporter-toolkit does not let one set',
    '    Cache-Control: no-store\n',
    /header "Cache-Control" cannot be configured \(as in exporter-toolkit\); accepted: Strict-Transport-Security, .*Content-Security-Policy/,
  ],
  [
    'a value outside the allowed ones',
    '    X-Frame-Options: allow-from https://x\n',
    /header "X-Frame-Options" has value "allow-from https:\/\/x"; accepted: deny, sameorigin/,
  ],
];
for (const [name, yaml, msg] of BAD_HEADERS) {
  test(`http_server_config.headers with ${name} stops trainwatch with exit 2 naming the header, instead of failing every request`, () => {
    const d = tmpDir();
    try {
      writeFileSync(join(d.path, 'web.yml'), `http_server_config:\n  headers:\n${yaml}`);
      assertRefusedStart(['--root', d.path, '--web.config.file', join(d.path, 'web.yml')], msg);
    } finally {
      d.cleanup();
    }
  });
}

test('the headers exporter-toolkit allows are sent on every answer, /healthz and the webhook included', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  writeFileSync(
    join(d.path, 'web.yml'),
    'http_server_config:\n  headers:\n    X-Frame-Options: deny\n    Content-Security-Policy: "default-src \'self\'"\n    Strict-Transport-Security: max-age=31536000\n',
  );
  const tw = await startTrainwatch(['--root', d.path, '--web.config.file', join(d.path, 'web.yml'), '--webhook.allow-unauthenticated']);
  t.after(() => tw.stop());
  const health = await fetch(`${tw.url}/healthz`);
  const hook = await fetch(`${tw.url}/webhook/alertmanager`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(payload('elsewhere')),
  });
  for (const res of [health, hook]) {
    assert.equal(200, res.status);
    assert.deepEqual(
      ['deny', "default-src 'self'", 'max-age=31536000'],
      ['x-frame-options', 'content-security-policy', 'strict-transport-security'].map((h) => res.headers.get(h)),
    );
  }
});

test('security headers are on by default: nosniff and no framing on every answer, and a CSP on the status page that allows exactly its own inline script and style', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const tw = await startTrainwatch(['--root', d.path]);
  t.after(() => tw.stop());
  for (const path of ['/', '/api/status', '/metrics', '/healthz', '/nowhere']) {
    const res = await fetch(tw.url + path);
    await res.arrayBuffer();
    assert.deepEqual(['nosniff', 'DENY'], [res.headers.get('x-content-type-options'), res.headers.get('x-frame-options')], path);
    assert.match(res.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/, path);
  }
  const page = await fetch(`${tw.url}/`);
  const html = await page.text();
  const csp = page.headers.get('content-security-policy')!;
  const hash = (s: string) => `'sha256-${createHash('sha256').update(s, 'utf8').digest('base64')}'`;
  const script = /<script>([\s\S]*?)<\/script>/.exec(html)![1];
  const style = /<style>([\s\S]*?)<\/style>/.exec(html)![1];
  assert.equal(`script-src ${hash(script)}`, /script-src [^;]+/.exec(csp)![0]);
  assert.equal(`style-src ${hash(style)}`, /style-src [^;]+/.exec(csp)![0]);
  assert.equal(false, /unsafe-inline|unsafe-eval/.test(csp));
  assert.match((await fetch(`${tw.url}/api/status`)).headers.get('content-security-policy')!, /^default-src 'none'/);
});

test('http_server_config.headers override the default security headers, on the status page too', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  writeFileSync(
    join(d.path, 'web.yml'),
    'http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n    Content-Security-Policy: "frame-ancestors \'self\'"\n',
  );
  const tw = await startTrainwatch(['--root', d.path, '--web.config.file', join(d.path, 'web.yml')]);
  t.after(() => tw.stop());
  for (const path of ['/', '/api/status']) {
    const res = await fetch(tw.url + path);
    await res.arrayBuffer();
    assert.deepEqual(
      ['sameorigin', "frame-ancestors 'self'", 'nosniff'],
      ['x-frame-options', 'content-security-policy', 'x-content-type-options'].map((h) => res.headers.get(h)),
      path,
    );
  }
});

// Every setting that names a file, given a FIFO: opening one to read would block until a writer came.
const FILE_SETTINGS: Array<[string, (dir: string, fifo: string) => string[], RegExp]> = [
  ['--config', (_d, fifo) => ['--config', fifo], /--config: .*fifo is a FIFO \(named pipe\), not a regular file/],
  ['--web.config.file', (_d, fifo) => ['--web.config.file', fifo], /--web\.config\.file: .*fifo is a FIFO \(named pipe\), not a regular file/],
  ['--webhook.token-file', (_d, fifo) => ['--webhook.token-file', fifo], /--webhook\.token-file: .*fifo is a FIFO \(named pipe\), not a regular file/],
  [
    'tls_server_config.cert_file',
    (dir) => (writeFileSync(join(dir, 'web.yml'), 'tls_server_config:\n  cert_file: fifo\n  key_file: fifo\n'), ['--web.config.file', join(dir, 'web.yml')]),
    /cert_file: .*fifo is a FIFO \(named pipe\), not a regular file/,
  ],
];
for (const [setting, args, msg] of FILE_SETTINGS) {
  test(`a FIFO given as ${setting} stops trainwatch with exit 2 and a clear message instead of hanging the start`, { timeout: 90_000 }, () => {
    const d = tmpDir();
    try {
      const fifo = join(d.path, 'fifo');
      assert.equal(0, spawnSync('mkfifo', [fifo]).status);
      assertRefusedStart(['--root', d.path, ...args(d.path, fifo)], msg);
    } finally {
      d.cleanup();
    }
  });
}

test('a directory or a file over 1 MiB given as --config stops trainwatch with exit 2, naming the file', () => {
  const d = tmpDir();
  try {
    assertRefusedStart(['--root', d.path, '--config', d.path], /--config: .* is a directory, not a regular file; give the path of a file/);
    writeFileSync(join(d.path, 'big.yml'), '#'.repeat((1 << 20) + 1));
    assertRefusedStart(['--root', d.path, '--config', join(d.path, 'big.yml')], /--config: .*big\.yml is larger than 1048576 bytes/);
  } finally {
    d.cleanup();
  }
});

/** A raw connection that sends one keep-alive GET /healthz: 'served' (and left open, idle) or 'refused' (closed with no answer). */
function idleAfterOneRequest(port: number): Promise<{ socket: Socket; outcome: 'served' | 'refused' }> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
    let got = '';
    socket.on('data', (b) => {
      got += b;
      if (got.includes('\r\n\r\nok\n')) resolve({ socket, outcome: 'served' });
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve({ socket, outcome: got === '' ? 'refused' : 'served' }));
  });
}

test('connections beyond --web.max-connections are closed unserved and counted; once idle ones go, /healthz answers again', { timeout: 60_000 }, async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const tw = await startTrainwatch(['--root', d.path, '--web.max-connections', '8', '--web.keep-alive-timeout-s', '300']);
  t.after(() => tw.stop());
  // Open idle keep-alive connections one by one until three are refused (the readiness probe's
  // own keep-alive connection may hold a slot for a while, so the number served is at most 8).
  const held: Socket[] = [];
  t.after(() => held.forEach((s) => s.destroy()));
  let refused = 0;
  for (let i = 0; i < 20 && refused < 3; i++) {
    const c = await idleAfterOneRequest(tw.port);
    if (c.outcome === 'served') held.push(c.socket);
    else refused++;
  }
  assert.equal(3, refused, `served ${held.length}, refused ${refused}`);
  assert.equal(true, held.length <= 8, `${held.length} connections held open with a cap of 8`);
  for (const s of held) s.destroy();
  // Until the server has seen them close, a probe can still be refused: each such is counted too.
  let probesRefused = 0;
  await waitFor(
    async () => {
      const r = await rawGet(tw.port, '/healthz').catch(() => (probesRefused++, undefined));
      return r?.status === 200;
    },
    '/healthz to answer once the idle connections are closed',
    60_000,
  );
  const m = await scrape(tw.url);
  assert.equal(3 + probesRefused, m.get('trainwatch_http_connections_refused_total{reason="max_connections"}'));
  assert.match(tw.logs(), /connection refused: --web\.max-connections are open/);
});

test('an idle keep-alive connection is closed by the server after --web.keep-alive-timeout-s', { timeout: 30_000 }, async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const tw = await startTrainwatch(['--root', d.path, '--web.keep-alive-timeout-s', '0.5']);
  t.after(() => tw.stop());
  const c = await idleAfterOneRequest(tw.port);
  assert.equal('served', c.outcome);
  // The test never closes it: only the server's idle timeout can end the wait.
  await new Promise<void>((resolve) => (c.socket.destroyed ? resolve() : c.socket.once('close', () => resolve())));
});
