// trainwatch serves its shipped docs read-only at /docs/<name>, where the alert rules'
// runbook_url links point: the runbook is there with an anchor per alert, and nothing outside
// the allow-list of docs/*.md (read at start) can be reached.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { ALERTS_FILE, type RulesDocument } from '../../src/gen/alerts.js';
import { loadDocs } from '../../src/http/docs.js';
import { REPO, startTrainwatch, teardown, tmpDir } from '../helpers/proc.js';

/** GET with the path sent exactly as written (fetch would normalise `..` away). */
function rawGet(port: number, path: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const alertNames = () => (parse(readFileSync(join(REPO, ALERTS_FILE), 'utf8')) as RulesDocument).groups.flatMap((g) => g.rules.map((r) => r.alert));

test('GET /docs/runbook is the shipped runbook as HTML with an anchor per alert, with the security headers; /docs/runbook.md is the markdown', async (t) => {
  const d = tmpDir('tw-docs-');
  const later = teardown(t);
  later(() => d.cleanup());
  const tw = await startTrainwatch(['--root', d.path]);
  later(() => tw.stop());

  const res = await fetch(`${tw.url}/docs/runbook`);
  assert.equal(200, res.status);
  assert.equal('text/html; charset=utf-8', res.headers.get('content-type'));
  assert.equal('nosniff', res.headers.get('x-content-type-options'));
  assert.equal('DENY', res.headers.get('x-frame-options'));
  assert.equal("default-src 'none'; frame-ancestors 'none'", res.headers.get('content-security-policy'));
  const html = await res.text();
  const ids = new Set([...html.matchAll(/<h\d id="([^"]+)"/g)].map((m) => m[1]));
  for (const a of alertNames()) assert.equal(true, ids.has(a.toLowerCase()), `no #${a.toLowerCase()} on /docs/runbook`);
  assert.doesNotMatch(html, /<script|<style|\son\w+=/i, 'no script or style: the default CSP forbids them');

  // Its links to other documents resolve against /docs/runbook and land on an existing anchor.
  const links = [...html.matchAll(/<a href="([^"]+)"/g)].map((m) => m[1]).filter((h) => !/^https?:/.test(h));
  assert.notEqual(0, links.length);
  for (const href of links) {
    const u = new URL(
      href.replace(/&#(\d+);/g, (_m, c: string) => String.fromCharCode(Number(c))),
      `${tw.url}/docs/runbook`,
    );
    if (u.pathname.endsWith('.md')) {
      assert.equal(200, (await fetch(u)).status, href);
      continue;
    }
    const target = u.pathname === '/docs/runbook' ? html : await (await fetch(u)).text();
    assert.match(target, /^<!doctype html>/, `${href} → ${u.pathname}`);
    if (u.hash) assert.match(target, new RegExp(`id="${u.hash.slice(1)}"`), `${href}: no ${u.hash} on ${u.pathname}`);
  }

  const md = await fetch(`${tw.url}/docs/runbook.md`);
  assert.equal(200, md.status);
  assert.equal('text/markdown; charset=utf-8', md.headers.get('content-type'));
  assert.equal(readFileSync(join(REPO, 'docs/runbook.md'), 'utf8'), await md.text());
  assert.equal('nosniff', md.headers.get('x-content-type-options'));

  const index = await (await fetch(`${tw.url}/docs/`)).text();
  assert.match(index, /<a href="runbook">runbook<\/a>/);
  const bare = await fetch(`${tw.url}/docs`, { redirect: 'manual' });
  assert.equal(302, bare.status);
  assert.equal(`${tw.url}/docs/`, new URL(bare.headers.get('location')!, `${tw.url}/docs`).href);
});

test('/docs serves nothing outside the docs/*.md allow-list: traversal, encoded separators and unknown names get 404', async (t) => {
  const d = tmpDir('tw-docs-');
  const later = teardown(t);
  later(() => d.cleanup());
  const tw = await startTrainwatch(['--root', d.path]);
  later(() => tw.stop());
  const secrets = [readFileSync(join(REPO, 'package.json'), 'utf8').slice(0, 40), 'root:x:0:0'];
  for (const path of [
    '/docs/../package.json',
    '/docs/..%2Fpackage.json',
    '/docs/%2e%2e%2fpackage.json',
    '/docs/%2e%2e/package.json',
    '/docs/..%5Cpackage.json',
    '/docs/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd',
    '/docs/package.json',
    '/docs/package',
    '/docs/README',
    '/docs/runbook.md%00',
    '/docs/runbook%00.md',
    '/docs/RUNBOOK',
    '/docs/nope',
    '/docs/__proto__',
    '/docs/constructor',
    '/docs/.',
    '/docs/..',
  ]) {
    const r = await rawGet(tw.port, path);
    assert.equal(404, r.status, `${path}: ${r.status} ${r.body.slice(0, 200)}`);
    for (const s of secrets) assert.equal(false, r.body.includes(s), `${path} leaked file content`);
  }
});

test('the docs allow-list is read once: regular <name>.md files only, no symbolic links, nothing added later', () => {
  const d = tmpDir('tw-docs-list-');
  try {
    const dir = join(d.path, 'docs');
    mkdirSync(dir);
    writeFileSync(join(dir, 'runbook.md'), '# Runbook\n');
    writeFileSync(join(dir, 'notes.txt'), 'not markdown\n');
    writeFileSync(join(dir, 'Upper.md'), 'not a served name\n');
    writeFileSync(join(d.path, 'secret.md'), 'outside docs/\n');
    symlinkSync(join(d.path, 'secret.md'), join(dir, 'linked.md'));
    mkdirSync(join(dir, 'sub.md'));
    const docs = loadDocs(dir);
    writeFileSync(join(dir, 'later.md'), '# Later\n');
    assert.deepEqual(['runbook'], [...docs.keys()]);
    assert.equal('# Runbook\n', docs.get('runbook'));
    assert.equal(0, loadDocs(join(d.path, 'missing')).size);
  } finally {
    d.cleanup();
  }
});
