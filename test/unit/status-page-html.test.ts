// The status page as the server renders it, without a browser: escaping, the embedded JSON,
// and the ?state= filter. (test/status-page.test.ts drives the same page in Chromium.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statusPageHtml } from '../../src/http/page.js';
import type { StatusDoc } from '../../src/http/status.js';

type RunDoc = StatusDoc['runs'][number];

const EVIL = '</script><script>window.__pwned=1</script><!--';

/** A run as api/status shows it; only what the page reads. */
function run(name: string, state: RunDoc['state'], extra: Partial<RunDoc> = {}): RunDoc {
  return {
    run: name,
    dir: `/runs/${name}`,
    state,
    reason: `why ${name}`,
    primary: undefined,
    liveness: 'verified',
    attempt: 1,
    profile: { name: 'default', via: 'default', halt: true },
    halt: undefined,
    expired: false,
    halted: false,
    anomalies: [],
    episodes: [],
    audit: [],
    ranks: [],
    ...extra,
  };
}

function doc(runs: RunDoc[]): StatusDoc {
  const states = { starting: 0, training: 0, anomalous: 0, halt_requested: 0, halted: 0, finished: 0, crashed: 0, expired: 0 };
  for (const r of runs) states[r.state]++;
  return {
    version: '0.0.0',
    now: 1_700_000_000,
    mode: 'embedded',
    halt: true,
    watch: { dirs: [], roots: [] },
    thresholds: {} as StatusDoc['thresholds'],
    profiles: {},
    states,
    runs,
  };
}

/** The rows as served inside <main> (the script also carries the view's source). */
const main = (html: string) => /<main id="runs">([^]*?)<\/main>/.exec(html)![1];
/** The runs served, by name. */
const served = (html: string) => [...main(html).matchAll(/data-run="([^"]*)"/g)].map((m) => m[1]);

test('run names, reasons, messages and .HALT text are escaped in the rows, and the embedded JSON cannot end its script element', () => {
  const d = doc([
    run('<img src=x onerror=alert(1)>', 'halted', {
      reason: EVIL,
      halt: { kind: EVIL, by: 'unknown' },
      primary: { kind: 'heartbeat_stall', severity: 'critical', rank: 0, message: EVIL },
    }),
    run(`a&b "q" 'x'`, 'training', { dir: EVIL }),
  ]);
  const html = statusPageHtml('1.0', '/metrics', d);
  assert.equal(false, html.includes('<img src=x'));
  assert.equal(true, html.includes('&lt;img src=x onerror=alert(1)&gt;'));
  assert.equal(true, html.includes('a&amp;b &quot;q&quot; &#39;x&#39;'));
  // Exactly the page's two script elements close; the hostile text never opens or closes one.
  assert.equal(2, html.match(/<\/script>/g)?.length);
  assert.equal(2, html.match(/<script[ >]/g)?.length);
  assert.equal(false, html.includes('<!--'));
  const embedded = /<script type="application\/json" id="status-data">([^]*?)<\/script>/.exec(html)![1];
  assert.deepEqual(JSON.parse(JSON.stringify(d)), JSON.parse(embedded));
});

test('the rows come in the order of the document, and a halted run is one closed line with its halt reason', () => {
  const d = doc([
    run('b-anomalous', 'anomalous'),
    run('a-halted', 'halted', { halt: { kind: 'heartbeat_stall', by: 'trainwatch' } }),
    run('c-training', 'training'),
  ]);
  const html = statusPageHtml('1.0', '/metrics', d);
  assert.deepEqual(['b-anomalous', 'a-halted', 'c-training'], served(html));
  const tag = (name: string) => new RegExp(`<details class="run" data-run="${name}"[^>]*>`).exec(html)![0];
  assert.equal(false, / open>$/.test(tag('a-halted')));
  assert.equal(true, / open>$/.test(tag('c-training')));
  // A closed run carries no rank table; an open one does.
  assert.equal(2, main(html).match(/<table>/g)?.length);
  assert.match(html, /halt reason<\/span><b>heartbeat_stall<\/b>, \.HALT written by trainwatch/);
});

test('?state= shows only the listed states; an unknown state is ignored and named, with the list of states', () => {
  const d = doc([run('x', 'anomalous'), run('y', 'halted'), run('z', 'finished'), run('w', 'training')]);
  assert.deepEqual(['y', 'z'], served(statusPageHtml('1.0', '/metrics', d, 'halted,finished')));
  assert.match(statusPageHtml('1.0', '/metrics', d, 'halted,finished'), /Showing 2 of 4 runs: halted, finished\./);
  const typo = statusPageHtml('1.0', '/metrics', d, 'haltd,<b>');
  assert.deepEqual(['x', 'y', 'z', 'w'], served(typo));
  assert.match(
    typo,
    /Ignored unknown state "haltd", "&lt;b&gt;" in \?state=\. The states are: anomalous, halt_requested, crashed, starting, training, halted, finished, expired\./,
  );
  // An array (?state=a&state=b) is not a filter either, and not a crash.
  assert.deepEqual(['x', 'y', 'z', 'w'], served(statusPageHtml('1.0', '/metrics', d, ['halted', 'finished'])));
});
