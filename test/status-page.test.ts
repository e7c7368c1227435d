// The built-in status page in a real browser (Debian's chromium driven by playwright-core):
// a run goes from healthy to stalled while the page is open, and the page follows by itself;
// 200 real run directories in every state make an overview that is sorted, filterable and
// server-rendered (usable with JavaScript off).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { HOSTILE, QUIRKY, writeRuns } from './helpers/runs.js';
import { REPO, requireBinary, startSimTrainer, startTrainwatch, tmpDir, waitFor, teardown } from './helpers/proc.js';

const ARTIFACTS = join(REPO, 'test-artifacts');

/** Headless chromium from the Debian package; playwright never downloads a browser here. */
async function launchChromium(): Promise<Browser> {
  const executablePath = requireBinary('chromium', 'chromium');
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
    ],
  });
}

interface StatusJson {
  states: Record<string, number>;
  runs: Array<{
    run: string;
    state: string;
    reason: string;
    primary?: { severity: string };
    anomalies: string[];
    ranks: Array<{ rank: number; step?: number }>;
  }>;
}

/** Collects page errors and console errors; a page that throws fails the test. */
function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  return errors;
}

test('status page: a run that stalls turns from training to anomalous heartbeat_stall without a reload', async (t) => {
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
  const sim = startSimTrainer([
    '--dir',
    join(d.path, 'stalling'),
    '--ranks',
    '2',
    '--step-s',
    '0.05',
    '--fault',
    'heartbeat_stall',
    '--fault-at',
    '100',
    '--beats',
    '--quiet',
  ]);
  later(() => sim.kill());

  await waitFor(async () => {
    const s = (await (await fetch(`${tw.url}/api/status`)).json()) as StatusJson;
    const run = s.runs.find((r) => r.run === 'stalling');
    return run && run.state === 'training' && run.ranks.length === 2 && run.ranks.some((k) => (k.step ?? 0) >= 5);
  }, 'the stalling run to be up and training in /api/status');

  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = watchErrors(page);
  await page.goto(tw.url + '/');
  const run = page.locator('[data-run="stalling"]');
  await run.and(page.locator('[data-state="training"]')).waitFor({ timeout: 5_000 });
  assert.match(await run.locator('summary').innerText(), /training/);
  // A marker that a reload would wipe out.
  await page.evaluate(() => ((window as unknown as { __loadedOnce: boolean }).__loadedOnce = true));

  // Without reloading, the run turns to the stall: stall threshold 2 s plus one 2 s poll.
  await page.locator('[data-run="stalling"][data-state="anomalous"]').waitFor({ timeout: 20_000 });
  assert.equal(true, await page.evaluate(() => (window as unknown as { __loadedOnce?: boolean }).__loadedOnce === true), 'the page was reloaded');
  assert.match((await run.getAttribute('data-anomalies')) ?? '', /(^| )heartbeat_stall( |$)/);
  assert.equal('critical', await run.getAttribute('data-severity'));
  assert.match(await run.locator('.primary').innerText(), /heartbeat_stall/);
  const rows = run.locator('tr[data-rank]');
  assert.equal(2, await rows.count());
  assert.equal('heartbeat_stall', await run.locator('tr[data-rank="0"]').getAttribute('data-state'));
  // The healthy neighbour stays healthy, and the stalled run moved above it.
  assert.equal('training', await page.locator('[data-run="steady"]').getAttribute('data-state'));
  assert.deepEqual(['stalling', 'steady'], await page.locator('details.run').evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.run)));

  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'status-page.png'), fullPage: true });
  assert.deepEqual([], errors);
});

/** The page's order, most urgent first (the brief's order; "anomalous:critical" before a halt request). */
const ORDER = ['anomalous:critical', 'halt_requested', 'anomalous', 'crashed', 'starting', 'training', 'halted', 'finished', 'expired'];
/** Waits until the page has drawn the next status document it polled (draw runs in the same task). */
async function nextRedraw(page: Page): Promise<void> {
  // `last` is the page script's top-level binding: reachable from an expression, not from window.
  // Polled from here: waitForFunction evals its predicate in the page, which the page's CSP forbids.
  const before = await page.evaluate('last.now');
  await waitFor(async () => (await page.evaluate('last.now')) !== before, 'the page to draw its next status document', 10_000);
}

const orderKey = (state: string, severity: string | null) => ORDER.indexOf(state === 'anomalous' && severity === 'critical' ? 'anomalous:critical' : state);

test(
  'status page at 200 runs: the worst run comes first, a state filter shows only that state, halted runs say why, and the first response already holds every row',
  { timeout: 120_000 },
  async (t) => {
    const later = teardown(t);
    const d = tmpDir('tw-page200-');
    later(() => d.cleanup());
    // The running trainers' stand-in: a process that started before their records.
    const trainer = spawn('sleep', ['600'], { stdio: 'ignore' });
    later(() => trainer.kill('SIGKILL'));
    const expected = writeRuns(d.path, trainer.pid!);
    const browser = await launchChromium();
    later(() => browser.close());
    const tw = await startTrainwatch(['--root', d.path], { NSA_WATCH_HEARTBEAT_STALL_S: '300', NSA_WATCH_STARTUP_GRACE_S: '600', NSA_WATCH_PID_CHECK: 'on' });
    later(() => tw.stop());
    const doc = await waitFor(
      async () => {
        const s = (await (await fetch(`${tw.url}/api/status`)).json()) as StatusJson;
        return s.runs.length === 200 && JSON.stringify(s.states) === JSON.stringify({ ...s.states, ...expected }) ? s : undefined;
      },
      `200 runs in these states: ${JSON.stringify(expected)}`,
      30_000,
    ).catch(async (e) => {
      const s = (await (await fetch(`${tw.url}/api/status`)).json()) as StatusJson;
      throw new Error(`${(e as Error).message}\nstates now: ${JSON.stringify(s.states)}\n${s.runs.map((r) => `${r.run}: ${r.state}: ${r.reason}`).join('\n')}`);
    });

    // Without JavaScript: the first response is the page, rows and all, and the filter is a link.
    const rowsIn = async (path: string) => {
      const html = await (await fetch(tw.url + path)).text();
      assert.equal(false, /Loading/.test(html));
      // The rows as served, not the view's source that the script carries.
      return /<main id="runs">([^]*?)<\/main>/.exec(html)![1].match(/<details class="run"/g)?.length;
    };
    assert.equal(200, await rowsIn('/'));
    assert.equal(expected.halted, await rowsIn('/?state=halted'));
    const noJs = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 1280, height: 900 } });
    later(() => noJs.close());
    const plain = await noJs.newPage();
    await plain.goto(tw.url + '/');
    assert.equal(200, await plain.locator('details.run').count());
    assert.match(await plain.locator('details.run').first().locator('summary').innerText(), /anomalous/);
    await plain.locator('#summary a.chip.finished').click();
    await plain.waitForURL(/\?state=finished$/);
    assert.equal(expected.finished, await plain.locator('details.run').count());

    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors = watchErrors(page);
    await page.goto(tw.url + '/');
    const runs = page.locator('details.run');
    assert.equal(200, await runs.count());

    // Order: the first row is the worst (a critical anomaly; nan-1 by name), and no row is more
    // urgent than the one above it; within one state, names ascend.
    const seen = await runs.evaluateAll((els) =>
      els.map((e) => [(e as HTMLElement).dataset.run!, (e as HTMLElement).dataset.state!, (e as HTMLElement).dataset.severity!]),
    );
    assert.deepEqual(['nan-1', 'anomalous', 'critical'], seen[0]);
    for (let i = 1; i < seen.length; i++) {
      const [a, b] = [seen[i - 1], seen[i]];
      const ka = orderKey(a[1], a[2]),
        kb = orderKey(b[1], b[2]);
      assert.ok(ka < kb || (ka === kb && a[0] < b[0]), `row ${i}: ${JSON.stringify(a)} comes before ${JSON.stringify(b)}`);
    }
    assert.deepEqual(
      doc.runs.map((r) => r.run),
      seen.map((s) => s[0]),
    );
    // The top of the page as a first look shows it (test-artifacts/, for a human to look at).
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'status-page-200.png') });

    // Halted runs are one line, and say why: the kind from .HALT and who wrote it.
    const stall = page.locator('[data-run="halted-stall-001"]');
    assert.equal(null, await stall.getAttribute('open'));
    assert.equal(0, await stall.locator('table').count());
    // (textContent: rows out of view are not laid out, see content-visibility in page.ts)
    assert.match((await stall.locator('summary').textContent()) ?? '', /heartbeat_stall/);
    assert.match((await stall.locator('.halt-reason').textContent()) ?? '', /halt reason\s*heartbeat_stall, \.HALT written by unknown/);
    assert.match((await page.locator('[data-run="halted-nan-001"] .halt-reason').textContent()) ?? '', /nan_loss, \.HALT written by trainer/);
    assert.match((await page.locator('[data-run="halting-1"] .halt-reason').textContent()) ?? '', /heartbeat_stall, \.HALT written by unknown/);
    // Opening a collapsed run shows its ranks, and the choice survives the next refresh.
    await stall.locator('summary').click();
    await stall.locator('tr[data-rank="1"]').waitFor();
    assert.match((await stall.locator('tr[data-rank="1"]').textContent()) ?? '', /boot-only/);
    await nextRedraw(page);
    assert.equal('', await stall.getAttribute('open'));
    assert.equal(2, await stall.locator('tr[data-rank]').count());

    // Liveness unknown is said, not hidden.
    assert.equal('liveness unknown', await page.locator('[data-run="train-no-pid"] summary .live').textContent());

    // Hostile names and .HALT text are shown as text, never run.
    assert.equal(undefined, await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned));
    const names = await page.locator('details.run .name').allTextContents();
    assert.equal(true, names.includes(HOSTILE) && names.includes(QUIRKY));

    // The filter: clicking a state's count shows only that state, in place and in the URL.
    await page.locator('#summary a.chip.halted').click();
    await page.waitForFunction((n) => document.querySelectorAll('details.run').length === n, expected.halted);
    assert.deepEqual(['halted'], [...new Set(await runs.evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.state)))]);
    assert.match(page.url(), /\?state=halted$/);
    // It holds across a refresh, and the count of all runs clears it.
    await nextRedraw(page);
    assert.equal(expected.halted, await runs.count());
    await page.locator('#summary a.chip.all').click();
    await page.waitForFunction(() => document.querySelectorAll('details.run').length === 200);
    assert.equal(false, page.url().includes('state='));
    assert.equal(undefined, await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned));
    assert.deepEqual([], errors);
  },
);
