// The built-in status page in a real browser (Debian's chromium driven by playwright-core):
// a run goes from healthy to stalled while the page is open, and the page follows by itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { REPO, requireBinary, startSimTrainer, startTrainwatch, tmpDir, waitFor , teardown } from './helpers/proc.js';


const ARTIFACTS = join(REPO, 'test-artifacts');

/** Headless chromium from the Debian package; playwright never downloads a browser here. */
async function launchChromium(): Promise<Browser> {
  const executablePath = requireBinary('chromium', 'chromium');
  return chromium.launch({
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
}

interface StatusJson {
  runs: Array<{ run: string; anomalies: string[]; ranks: Array<{ rank: number; step?: number }> }>;
}

test('status page: a run that stalls turns from healthy to heartbeat_stall without a reload', async (t) => {
  const later = teardown(t);
  const d = tmpDir('tw-page-');
  later(() => d.cleanup());
  const browser = await launchChromium();
  later(() => browser.close());
  const tw = await startTrainwatch(['--root', d.path], { NSA_WATCH_HEARTBEAT_STALL_S: '2', NSA_WATCH_STARTUP_GRACE_S: '2' });
  later(() => tw.stop());
  // A healthy neighbour, so the page has more than one run to tell apart.
  const ok = startSimTrainer(['--dir', join(d.path, 'steady'), '--ranks', '2', '--step-s', '0.05', '--beats', '--quiet']);
  later(() => ok.kill());
  // Both ranks hang at step 100 (about 5 s in); nothing is written after that.
  const sim = startSimTrainer(['--dir', join(d.path, 'stalling'), '--ranks', '2', '--step-s', '0.05', '--fault', 'heartbeat_stall', '--fault-at', '100', '--beats', '--quiet']);
  later(() => sim.kill());

  await waitFor(
    async () => {
      const s = (await (await fetch(`${tw.url}/api/status`)).json()) as StatusJson;
      const run = s.runs.find((r) => r.run === 'stalling');
      return run && run.anomalies.length === 0 && run.ranks.length === 2 && run.ranks.every((k) => (k.step ?? 0) >= 5);
    },
    'the stalling run to be up and healthy in /api/status',
  );

  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  await page.goto(tw.url + '/');
  const run = page.locator('[data-run="stalling"]');
  await run.and(page.locator('[data-state="healthy"]')).waitFor({ timeout: 5_000 });
  assert.equal('healthy', await run.getAttribute('data-state'));
  assert.match(await run.innerText(), /healthy/);
  // A marker that a reload would wipe out.
  await page.evaluate(() => ((window as unknown as { __loadedOnce: boolean }).__loadedOnce = true));

  // Without reloading, the run turns to the stall: stall threshold 2 s plus one 2 s poll.
  await page.locator('[data-run="stalling"][data-state="anomaly"]').waitFor({ timeout: 20_000 });
  assert.equal(true, await page.evaluate(() => (window as unknown as { __loadedOnce?: boolean }).__loadedOnce === true), 'the page was reloaded');
  assert.match((await run.getAttribute('data-anomalies')) ?? '', /(^| )heartbeat_stall( |$)/);
  assert.match(await run.locator('h2').innerText(), /heartbeat_stall/);
  const rows = run.locator('tr[data-rank]');
  assert.equal(2, await rows.count());
  for (const rank of ['0', '1']) assert.equal('heartbeat_stall', await run.locator(`tr[data-rank="${rank}"]`).getAttribute('data-state'));
  // The healthy neighbour stays healthy.
  assert.equal('healthy', await page.locator('[data-run="steady"]').getAttribute('data-state'));

  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'status-page.png'), fullPage: true });
  assert.deepEqual([], errors);
});
