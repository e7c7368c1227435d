// The built-in status page: one self-contained HTML document (no CDN: clusters are often
// air-gapped) that polls api/status and redraws in place. It is served by the same app as
// /metrics, so it sits behind the same basic auth and TLS, and the browser re-sends the
// credentials with its same-origin fetches. URLs are relative so the page also works behind a
// reverse proxy that mounts trainwatch under a sub-path.
//
// Memory stays bounded however long the tab is open: the page keeps only the newest status
// document (the tokens/s history is the server's bounded window), at most MAX_ROWS rows per
// run unless a run is expanded, and the last AUDIT_LINES audit entries per run.

/** The status page HTML. */
export function statusPageHtml(version: string, metricsPath: string): string {
  const metricsHref = metricsPath.startsWith('/') ? '.' + metricsPath : metricsPath;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>trainwatch</title>
<link rel="icon" id="icon" href="data:,">
<style>
:root{--fg:#1d2330;--muted:#5f6673;--bg:#f6f7f9;--card:#fff;--line:#e4e7ec;--head:#f1f3f6;--ok:#188038;--okbg:#e6f4ea;--warn:#b06000;--warnbg:#fef7e0;--bad:#c5221f;--badbg:#fce8e6;--halt:#5f6368;--spark:#1a73e8}
@media (prefers-color-scheme:dark){:root{--fg:#e3e5e8;--muted:#9aa0a6;--bg:#17191c;--card:#202327;--line:#33373d;--head:#2a2d32;--ok:#81c995;--okbg:#1e3a29;--warn:#fdd663;--warnbg:#3d3420;--bad:#f28b82;--badbg:#4a2523;--halt:#9aa0a6;--spark:#8ab4f8}}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;padding:20px 24px 40px;color:var(--fg);background:var(--bg)}
a{color:var(--spark)}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:6px 18px;margin-bottom:14px}
h1{font-size:20px;margin:0}
.meta{color:var(--muted);font-size:13px}
#summary{display:flex;gap:8px;flex-wrap:wrap;margin:0 0 16px}
.chip{padding:2px 10px;border-radius:12px;background:var(--card);border:1px solid var(--line);font-size:13px}
.chip b{font-variant-numeric:tabular-nums}
.chip.anomaly b{color:var(--bad)}.chip.halted b{color:var(--halt)}.chip.healthy b{color:var(--ok)}.chip.expired b{color:var(--muted)}
#err{display:none;margin:0 0 14px;padding:8px 12px;border-radius:6px;background:var(--badbg);color:var(--bad);font-weight:600}
body.stale #err{display:block} body.stale #runs{opacity:.55}
.run{background:var(--card);border:1px solid var(--line);border-left:5px solid var(--ok);border-radius:6px;margin:0 0 16px;padding:10px 14px 12px}
.run[data-state=anomaly]{border-left-color:var(--bad)}.run[data-state=halted]{border-left-color:var(--halt)}.run[data-state=expired]{border-left-color:var(--line);opacity:.7}
.run h2{font-size:16px;margin:0 0 8px;display:flex;flex-wrap:wrap;align-items:center;gap:6px}
.run h2 .info{font-size:12px;font-weight:400;color:var(--muted);margin-left:6px}
.tag{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;background:var(--bad)}
.tag.ok{background:var(--ok)}.tag.halt{background:var(--halt)}.tag.expired{background:var(--muted)}
@media (prefers-color-scheme:dark){.tag{color:#17191c}}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;min-width:1040px;table-layout:fixed;font-variant-numeric:tabular-nums}
col.c-rank{width:56px}col.c-age{width:150px}col.c-step{width:84px}col.c-toks{width:92px}col.c-hist{width:104px}col.c-loss{width:84px}col.c-streak{width:92px}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
th{background:var(--head);font-weight:600;font-size:12px;cursor:help;white-space:normal;vertical-align:bottom;line-height:1.25}
td.l,th.l{text-align:left}
tr:last-child td{border-bottom:0}
td.warn{background:var(--warnbg);color:var(--warn)}
td.bad{background:var(--badbg);color:var(--bad);font-weight:600}
td.off{color:var(--muted)}
td.more{text-align:left;color:var(--muted)}
button{font:inherit;font-size:12px;padding:1px 8px;margin-left:8px;cursor:pointer}
svg{display:block;margin-left:auto}
.audit{margin-top:8px;font:12px/1.5 ui-monospace,SFMono-Regular,Menlo,monospace;color:var(--muted);max-height:8.5em;overflow:auto;border-top:1px dashed var(--line);padding-top:6px;white-space:pre-wrap}
.empty{padding:16px;background:var(--card);border:1px dashed var(--line);border-radius:6px;color:var(--muted)}
</style></head><body>
<header><h1>trainwatch</h1>
<span class="meta">version ${escapeHtml(version)} · <a href="${escapeHtml(metricsHref)}">metrics</a> · <a href="api/status">status JSON</a> · <span id="mode">…</span> · updated <span id="updated">never</span></span></header>
<div id="err" role="alert"></div>
<div id="summary"></div>
<main id="runs"><div class="empty">Loading…</div></main>
<script>
'use strict';
const POLL_MS = 2000, MAX_ROWS = 64, AUDIT_LINES = 8;
const ORDER = {halted: 0, anomaly: 1, healthy: 2, expired: 3};
const expanded = new Set();
let last = null, timer = null, inflight = false;

const esc = s => String(s).replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
const fmtAge = s => s === undefined || s === null ? '–' : s < 120 ? s.toFixed(1) + 's' : s < 7200 ? (s / 60).toFixed(1) + 'm' : (s / 3600).toFixed(1) + 'h';
const isNum = v => typeof v === 'number' && isFinite(v);
const fmtInt = v => isNum(v) ? Math.round(v).toLocaleString('en-US') : v === undefined || v === null ? '–' : esc(v);
const fmtReal = v => isNum(v) ? (Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en-US') : v.toPrecision(4)) : v === undefined || v === null ? '–' : esc(v);
const runState = r => r.halted ? 'halted' : r.anomalies.length ? 'anomaly' : r.expired ? 'expired' : 'healthy';

function spark(vals) {
  if (!vals || !vals.length) return '';
  const w = 88, h = 20, pad = 2, max = Math.max(...vals, 1e-9), min = Math.min(...vals);
  const x = i => vals.length === 1 ? w : i * w / (vals.length - 1);
  const y = v => h - pad - Math.max(0, v) / max * (h - 2 * pad);
  const pts = vals.map((v, i) => x(i).toFixed(1) + ',' + y(v).toFixed(1)).join(' ');
  return '<svg width="' + w + '" height="' + h + '" role="img" aria-label="tokens per second history"><title>last ' + vals.length + ' progress records: min ' + fmtReal(min) + ', max ' + fmtReal(max) + ' tokens/s</title>' +
    '<line x1="0" x2="' + w + '" y1="' + (h - pad) + '" y2="' + (h - pad) + '" stroke="currentColor" stroke-opacity=".15"/>' +
    '<polyline fill="none" stroke="var(--spark)" stroke-width="1.5" stroke-linejoin="round" points="' + pts + '"/></svg>';
}

function streakCell(s) {
  if (!s) return '<td class="off">–</td>';
  if (!s.threshold) return '<td class="off" title="rule disabled (threshold 0)">' + s.value + ' / off</td>';
  // A streak of 1 is just the newest record; colour only once it is half-way to firing.
  const cls = s.value >= s.threshold ? 'bad' : s.value >= Math.max(2, Math.ceil(s.threshold / 2)) ? 'warn' : '';
  return '<td class="' + cls + '">' + s.value + ' / ' + s.threshold + '</td>';
}

function rankRow(k) {
  const ageCls = k.age === undefined || k.age === null ? '' : k.age > k.stallS ? 'bad' : k.age > k.stallS / 2 ? 'warn' : '';
  const st = k.streaks || {};
  const lossCls = typeof k.loss === 'string' ? 'bad' : '';
  return '<tr data-rank="' + esc(k.rank) + '" data-state="' + esc(k.anomalies.length ? k.anomalies.join(' ') : 'ok') + '">' +
    '<td class="l">' + esc(k.rank) + '</td>' +
    '<td class="' + ageCls + '">' + fmtAge(k.age) + ' / ' + fmtAge(k.stallS) + '</td>' +
    '<td>' + fmtInt(k.step) + '</td><td>' + fmtReal(k.toksPerS) + '</td><td>' + spark(k.toksHistory) + '</td>' +
    '<td class="' + lossCls + '">' + fmtReal(k.loss) + '</td>' +
    streakCell(st.throughput_flatline) + streakCell(st.loss_flatline) + streakCell(st.zero_grad) + streakCell(st.nonfinite_loss) + streakCell(st.gate_collapse) +
    '<td class="l' + (k.anomalies.length ? ' bad' : '') + '">' + (k.anomalies.map(esc).join(', ') || '–') + '</td></tr>';
}

/** At most MAX_ROWS ranks unless expanded: ranks with anomalies first, then the oldest heartbeats. */
function visibleRanks(r) {
  if (r.ranks.length <= MAX_ROWS || expanded.has(r.run)) return r.ranks;
  const pick = r.ranks.slice().sort((a, b) => (b.anomalies.length > 0) - (a.anomalies.length > 0) || (b.age || 0) - (a.age || 0)).slice(0, MAX_ROWS);
  return pick.sort((a, b) => a.rank - b.rank);
}

const HEAD = '<colgroup><col class="c-rank"><col class="c-age"><col class="c-step"><col class="c-toks"><col class="c-hist"><col class="c-loss">' +
  '<col class="c-streak"><col class="c-streak"><col class="c-streak"><col class="c-streak"><col class="c-streak"><col></colgroup>' +
  '<thead><tr><th class="l" title="DDP rank">rank</th>' +
  '<th title="Seconds since the newest liveness record / the stall threshold in force (the startup grace until the first progress record)">heartbeat age / limit</th>' +
  '<th title="Newest training step">step</th><th title="Global tokens per second from the newest progress record">tokens/s</th>' +
  '<th title="tokens/s over the last progress records, from 0 to the window maximum">tokens/s history</th><th title="Loss from the newest progress record">loss</th>' +
  '<th title="Progress records in a row with toks_per_s <= 0 / records that raise throughput_flatline">tput flat</th>' +
  '<th title="Progress records in a row with the identical loss / records that raise loss_flatline">loss flat</th>' +
  '<th title="Progress records in a row with grad_norm == 0 / records that raise zero_grad">zero grad</th>' +
  '<th title="Progress records in a row with a NaN or infinite loss or grad_norm / records that raise nonfinite_loss">non-finite</th>' +
  '<th title="Progress records in a row with collapsed NSA gates / records that raise gate_collapse">gate</th>' +
  '<th class="l" title="Anomalies the detector sees now">anomaly</th></tr></thead>';

function renderRun(r) {
  const state = runState(r);
  const tags = (r.halted ? '<span class="tag halt">.HALT</span>' : '') + r.anomalies.map(a => '<span class="tag">' + esc(a) + '</span>').join('') +
    (state === 'healthy' ? '<span class="tag ok">healthy</span>' : '') + (state === 'expired' ? '<span class="tag expired">expired</span>' : '');
  const steps = r.ranks.map(k => k.step).filter(isNum);
  const info = r.ranks.length + (r.ranks.length === 1 ? ' rank' : ' ranks') + (steps.length ? ' · step ' + fmtInt(Math.max(...steps)) : '');
  const shown = visibleRanks(r);
  let rows = shown.map(rankRow).join('');
  if (shown.length < r.ranks.length || expanded.has(r.run) && r.ranks.length > MAX_ROWS) {
    rows += '<tr><td class="more" colspan="12">' + (shown.length < r.ranks.length
      ? 'Showing ' + shown.length + ' of ' + r.ranks.length + ' ranks: those with anomalies first, then the oldest heartbeats.<button type="button" data-expand="' + esc(r.run) + '">show all</button>'
      : 'Showing all ' + r.ranks.length + ' ranks.<button type="button" data-collapse="' + esc(r.run) + '">show fewer</button>') + '</td></tr>';
  }
  const audit = (r.audit || []).slice(-AUDIT_LINES).reverse()
    .map(e => esc([e.iso, e.event, e.kind, e.action ? e.action + '=' + e.result : '', e.message].filter(Boolean).join(' '))).join('\\n');
  return '<section class="run" data-run="' + esc(r.run) + '" data-state="' + state + '" data-anomalies="' + esc(r.anomalies.join(' ')) + '">' +
    '<h2>' + esc(r.run) + tags + '<span class="info">' + info + '</span></h2>' +
    '<div class="scroll"><table>' + HEAD + '<tbody>' + rows + '</tbody></table></div>' +
    (audit ? '<div class="audit" title="Newest actions and anomalies first">' + audit + '</div>' : '') + '</section>';
}

function render(d) {
  document.getElementById('mode').textContent = 'mode ' + d.mode + (d.halt ? ', auto-halt on' : ', auto-halt off');
  const counts = {halted: 0, anomaly: 0, healthy: 0, expired: 0};
  for (const r of d.runs) counts[runState(r)]++;
  const problems = counts.halted + counts.anomaly;
  document.title = (problems ? '(' + problems + ') ' : '') + 'trainwatch';
  // A dot in the tab's icon: red while any run needs attention, so a background tab still tells.
  const dot = problems ? '%23d93025' : d.runs.length ? '%23188038' : '%239aa0a6';
  const icon = 'data:image/svg+xml,<svg xmlns=%22http://www.w3.org/2000/svg%22 viewBox=%220 0 16 16%22><circle cx=%228%22 cy=%228%22 r=%227%22 fill=%22' + dot + '%22/></svg>';
  const link = document.getElementById('icon');
  if (link.getAttribute('href') !== icon) link.setAttribute('href', icon);
  document.getElementById('summary').innerHTML = d.runs.length ? '<span class="chip"><b>' + d.runs.length + '</b> runs</span>' +
    ['anomaly', 'halted', 'healthy', 'expired'].filter(s => counts[s] || s === 'healthy').map(s => '<span class="chip ' + s + '"><b>' + counts[s] + '</b> ' + s + '</span>').join('') : '';
  const names = new Set(d.runs.map(r => r.run));
  for (const n of expanded) if (!names.has(n)) expanded.delete(n);
  if (!d.runs.length) return '<div class="empty">No runs found yet. Point trainwatch at a run directory with --dir, or at a directory of runs with --root.</div>';
  // Runs that need attention first, then by name.
  const runs = d.runs.slice().sort((a, b) => ORDER[runState(a)] - ORDER[runState(b)] || (a.run < b.run ? -1 : a.run > b.run ? 1 : 0));
  return runs.map(renderRun).join('');
}

function draw() {
  if (last) document.getElementById('runs').innerHTML = render(last);
}

async function tick() {
  if (inflight) return;
  inflight = true;
  clearTimeout(timer);
  try {
    const res = await fetch('api/status', {cache: 'no-store'});
    if (!res.ok) throw new Error('HTTP ' + res.status);
    last = await res.json();
    draw();
    document.getElementById('updated').textContent = new Date().toLocaleTimeString();
    document.body.classList.remove('stale');
  } catch (e) {
    document.getElementById('err').textContent = 'Cannot reach trainwatch (' + e.message + '); showing the last data received, retrying every ' + POLL_MS / 1000 + ' s.';
    document.body.classList.add('stale');
  } finally {
    inflight = false;
  }
  // Hidden tabs stop polling; they catch up when shown again.
  if (!document.hidden) timer = setTimeout(tick, POLL_MS);
}

document.addEventListener('click', e => {
  const b = e.target.closest('button[data-expand],button[data-collapse]');
  if (!b) return;
  if (b.dataset.expand) expanded.add(b.dataset.expand); else expanded.delete(b.dataset.collapse);
  draw();
});
document.addEventListener('visibilitychange', () => { if (!document.hidden) tick(); });
tick();
</script></body></html>
`;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}
