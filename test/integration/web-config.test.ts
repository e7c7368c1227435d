// --web.config.file (exporter-toolkit format): TLS; bad configs; slow clients.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { connect } from 'node:net';
import { join } from 'node:path';
import { BIN, freePort, requireBinary, startTrainwatch, tmpDir } from '../helpers/proc.js';

function selfSigned(dir: string): { cert: string; key: string } {
  const openssl = requireBinary('openssl', 'openssl');
  const cert = join(dir, 'tls.crt');
  const key = join(dir, 'tls.key');
  const r = spawnSync(
    openssl,
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(0, r.status, r.stderr);
  return { cert, key };
}

function httpsGet(port: number, path: string, ca: Buffer, post?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        ca,
        servername: 'localhost',
        method: post === undefined ? 'GET' : 'POST',
        headers: post === undefined ? {} : { 'content-type': 'application/json' },
      },
      (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end(post);
  });
}

test('tls_server_config serves /metrics and the webhook over HTTPS with the given certificate', { timeout: 60_000 }, async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const { cert, key } = selfSigned(d.path);
  const wc = join(d.path, 'web.yml');
  writeFileSync(wc, `tls_server_config:\n  cert_file: ${cert}\n  key_file: ${key}\n  min_version: TLS12\n`);
  // startTrainwatch probes over plain HTTP, so start it directly and probe over HTTPS.
  const port = await freePort();
  const proc = spawn(
    process.execPath,
    [BIN, '--root', d.path, '--web.config.file', wc, '--web.listen-address', `127.0.0.1:${port}`, '--webhook.allow-unauthenticated'],
    { stdio: 'ignore' },
  );
  t.after(() => proc.kill('SIGKILL'));
  const ca = readFileSync(cert);
  let res: { status: number; body: string } | undefined;
  for (let i = 0; i < 100 && !res; i++) {
    res = await httpsGet(port, '/metrics', ca).catch(() => undefined);
    if (!res) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(200, res?.status);
  assert.match(res!.body, /trainwatch_build_info\{/);
  const hook = await httpsGet(port, '/webhook/alertmanager', ca, JSON.stringify({ version: '4', alerts: [{ labels: { run: 'elsewhere' } }] }));
  assert.deepEqual({ status: 200, body: '{"status":"ok","alerts":[{"run":"elsewhere","result":"not_ours"}]}' }, hook);
});

const badConfigs: Array<[string, string, RegExp]> = [
  ['a TLS section without a key file', 'tls_server_config:\n  cert_file: /nonexistent.crt\n', /tls_server_config needs key_file \(or key\)/],
  [
    'an unreadable certificate',
    'tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n',
    /cert_file: cannot read \/nonexistent\.crt/,
  ],
  ['a plain-text password instead of a bcrypt hash', 'basic_auth_users:\n  admin: hunter2\n', /must be a bcrypt hash \(make one with: htpasswd/],
  ['an unknown top-level key', 'tls_config:\n  x: 1\n', /unknown key 'tls_config'/],
];
for (const [name, yaml, msg] of badConfigs) {
  test(`a web config with ${name} stops trainwatch before it starts, naming the fix`, () => {
    const d = tmpDir();
    const wc = join(d.path, 'web.yml');
    writeFileSync(wc, yaml);
    const r = spawnSync(process.execPath, [BIN, '--root', d.path, '--web.config.file', wc, '--web.listen-address', '127.0.0.1:0'], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    d.cleanup();
    assert.equal(2, r.status);
    assert.match(r.stderr, msg);
    assert.equal(false, r.stderr.includes('    at '));
  });
}

test('a client that sends its body too slowly is cut off, and trainwatch keeps serving', { timeout: 30_000 }, async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const tw = await startTrainwatch(['--root', d.path, '--webhook.allow-unauthenticated', '--web.request-timeout-s', '1']);
  t.after(() => tw.stop());
  const answer = await new Promise<string>((resolve) => {
    const sock = connect(tw.port, '127.0.0.1', () => {
      sock.write('POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"ver');
      const drip = setInterval(() => sock.write(' '), 200);
      let got = '';
      sock.on('data', (b) => (got += b));
      sock.on('close', () => {
        clearInterval(drip);
        resolve(got);
      });
    });
  });
  // The body would take 200 s at this pace: a 408 and a closed socket mean it was cut off.
  assert.match(answer, /^HTTP\/1\.1 408/);
  assert.equal(200, (await fetch(`${tw.url}/healthz`)).status);
});
