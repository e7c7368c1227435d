// /metrics as scrapers ask for it: gzip when accepted (Prometheus's default), plain text
// otherwise, and a scraper that hangs up halfway does not hurt the next one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdirSync } from 'node:fs';
import { request, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { pyJson, requireBinary, startTrainwatch, tmpDir } from '../helpers/proc.js';

/** What Prometheus 2.x sends, without Accept-Encoding. */
const PROM = {
  accept: 'application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2',
  'user-agent': 'Prometheus/2.53.0',
};

function get(url: string, headers: Record<string, string>): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** A run directory with `ranks` heartbeat files of a few steps each. */
function writeRun(dir: string, ranks: number): void {
  mkdirSync(dir, { recursive: true });
  const now = Date.now() / 1000;
  for (let rank = 0; rank < ranks; rank++) {
    for (let step = 1; step <= 3; step++) {
      appendFileSync(
        join(dir, `heartbeat_rank${rank}.jsonl`),
        pyJson({ ts: now - 5 + step, pid: 4242 + rank, rank, step, msg: 'progress', loss: 2.5 - step / 10, toks_per_s: 1000, grad_norm: 1 }) + '\n',
      );
    }
  }
}

/** trainwatch's own lines, without the one family that moves with the clock. */
const ours = (text: string) => text.split('\n').filter((l) => l.includes('trainwatch_') && !l.startsWith('trainwatch_heartbeat_age_seconds{'));

test('a scraper that accepts gzip, as Prometheus does, gets the exposition compressed; one that does not gets the same text plain', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  writeRun(join(d.path, 'runA'), 2);
  const tw = await startTrainwatch(['--root', d.path]);
  t.after(() => tw.stop());
  const url = `${tw.url}/metrics`;
  const zipped = await get(url, { ...PROM, 'accept-encoding': 'gzip' });
  assert.equal(200, zipped.status);
  assert.equal('gzip', zipped.headers['content-encoding']);
  assert.equal('Accept-Encoding', zipped.headers.vary);
  assert.equal('text/plain; version=0.0.4; charset=utf-8', zipped.headers['content-type']);
  assert.equal(zipped.body.length, Number(zipped.headers['content-length']));
  const text = gunzipSync(zipped.body).toString('utf8');
  assert.equal(true, text.includes('\ntrainwatch_step{run="runA",rank="1"} 3\n'));

  const plain = await get(url, PROM);
  assert.equal(undefined, plain.headers['content-encoding']);
  assert.equal('text/plain; version=0.0.4; charset=utf-8', plain.headers['content-type']);
  assert.deepEqual(ours(plain.body.toString('utf8')), ours(text));
  const refused = await get(url, { ...PROM, 'accept-encoding': 'gzip;q=0, identity' });
  assert.equal(undefined, refused.headers['content-encoding']);
  assert.deepEqual(ours(refused.body.toString('utf8')), ours(text));

  const promtool = requireBinary('promtool', 'prometheus');
  for (const body of [text, plain.body.toString('utf8')]) {
    const lint = spawnSync(promtool, ['check', 'metrics'], { input: body, encoding: 'utf8' });
    assert.equal('', lint.stdout + lint.stderr);
  }
});

test('a scraper that hangs up halfway through a plain-text body leaves trainwatch serving the next scrape whole', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  // About 0.5 MB of exposition: more than one chunk, so the body is still being sent when the scraper leaves.
  for (let r = 0; r < 40; r++) writeRun(join(d.path, `run${r}`), 8);
  const tw = await startTrainwatch(['--root', d.path]);
  t.after(() => tw.stop());
  const url = `${tw.url}/metrics`;
  for (let i = 0; i < 5; i++) {
    await new Promise<void>((resolve) => {
      const req = request(url, { headers: PROM }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => resolve());
      req.end();
    });
  }
  const whole = await get(url, PROM);
  assert.equal(200, whole.status);
  const text = whole.body.toString('utf8');
  assert.equal(320, text.match(/^trainwatch_step\{/gm)?.length);
  assert.equal(true, text.endsWith('\n'));
  assert.equal(200, (await get(`${tw.url}/healthz`, {})).status);
  assert.equal(null, tw.proc.exitCode);
});
