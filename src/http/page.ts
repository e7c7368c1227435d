// The built-in status page: one self-contained HTML document (no CDN: clusters are often
// air-gapped) that polls /api/status and redraws in place.

/** The status page HTML. */
export function statusPageHtml(version: string, metricsPath: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>trainwatch</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2330;background:#fafbfc}
h1{font-size:20px;margin:0 0 .2em} .sub{color:#667;margin-bottom:1em}
table{border-collapse:collapse;margin:.4em 0 1.2em;background:#fff;box-shadow:0 1px 2px #0001}
th,td{padding:4px 10px;border-bottom:1px solid #e4e7ec;text-align:right;white-space:nowrap}
th{background:#f1f3f6;font-weight:600} td.l,th.l{text-align:left}
.ok{background:#e7f6ec}.warn{background:#fff4d6}.bad{background:#fde2e1;font-weight:600}
.run{margin-top:1.2em}.run h2{font-size:16px;margin:.2em 0}.tag{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;margin-left:6px}
.tag.bad{background:#d93025;color:#fff}.tag.halt{background:#5f6368;color:#fff}.tag.ok{background:#188038;color:#fff}
.audit{font:12px ui-monospace,monospace;color:#444;max-height:9em;overflow:auto;background:#fff;padding:4px 8px;border:1px solid #e4e7ec}
#err{color:#d93025}
</style></head><body>
<h1>trainwatch</h1>
<div class="sub">version ${escapeHtml(version)} · <a href="${escapeHtml(metricsPath)}">metrics</a> · <a href="/api/status">status JSON</a> · <span id="mode"></span> · updated <span id="updated">never</span> <span id="err"></span></div>
<div id="runs">Loading…</div>
<script>
const fmtAge = s => s === undefined ? '–' : s < 120 ? s.toFixed(1) + 's' : s < 7200 ? (s / 60).toFixed(1) + 'm' : (s / 3600).toFixed(1) + 'h';
const esc = s => String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
const num = v => v === undefined || v === null ? '–' : typeof v === 'string' ? v : Math.abs(v) >= 1000 ? v.toFixed(0) : v.toPrecision(4);
function spark(vals) {
  if (!vals.length) return '';
  const w = 80, h = 18, max = Math.max(...vals, 1e-9);
  const pts = vals.map((v, i) => (vals.length === 1 ? w : i * w / (vals.length - 1)).toFixed(1) + ',' + (h - Math.max(0, v) / max * h).toFixed(1)).join(' ');
  return '<svg width="' + w + '" height="' + h + '" aria-label="tokens per second history"><polyline fill="none" stroke="#1a73e8" stroke-width="1.5" points="' + pts + '"/></svg>';
}
function streakCell(s) {
  if (!s.threshold) return '<td>' + s.value + '</td>';
  const cls = s.value >= s.threshold ? 'bad' : s.value > 0 ? 'warn' : '';
  return '<td class="' + cls + '">' + s.value + '/' + s.threshold + '</td>';
}
function render(d) {
  document.getElementById('mode').textContent = 'mode ' + d.mode + (d.halt ? ', auto-halt on' : ', auto-halt off');
  if (!d.runs.length) return '<p>No runs found yet. Point trainwatch at a run directory with --dir, or at a directory of runs with --root.</p>';
  return d.runs.map(r => {
    const state = r.halted ? 'halted' : r.anomalies.length ? 'anomaly' : r.expired ? 'expired' : 'healthy';
    const tags = (r.halted ? '<span class="tag halt">.HALT</span>' : '') + r.anomalies.map(a => '<span class="tag bad">' + esc(a) + '</span>').join('') + (state === 'healthy' ? '<span class="tag ok">healthy</span>' : '');
    const rows = r.ranks.map(k => {
      const ageCls = k.age === undefined ? '' : k.age > k.stallS ? 'bad' : k.age > k.stallS / 2 ? 'warn' : 'ok';
      const st = k.streaks;
      return '<tr data-rank="' + k.rank + '" data-state="' + (k.anomalies.length ? k.anomalies.join(' ') : 'ok') + '"><td class="l">' + k.rank + '</td><td class="' + ageCls + '">' + fmtAge(k.age) + ' / ' + fmtAge(k.stallS) + '</td><td>' + num(k.step) + '</td><td>' + num(k.toksPerS) + '</td><td>' + spark(k.toksHistory) + '</td><td>' + num(k.loss) + '</td>' +
        streakCell(st.throughput_flatline) + streakCell(st.loss_flatline) + streakCell(st.zero_grad) + streakCell(st.nonfinite_loss) + streakCell(st.gate_collapse) +
        '<td class="l' + (k.anomalies.length ? ' bad' : '') + '">' + (k.anomalies.map(esc).join(', ') || '–') + '</td></tr>';
    }).join('');
    const audit = r.audit.slice(-8).reverse().map(e => esc((e.iso || '') + ' ' + e.event + ' ' + (e.kind || '') + ' ' + (e.action ? e.action + '=' + e.result : '') + ' ' + (e.message || ''))).join('<br>');
    return '<div class="run" data-run="' + esc(r.run) + '" data-state="' + state + '"><h2>' + esc(r.run) + tags + '</h2>' +
      '<table><tr><th class="l">rank</th><th>heartbeat age / limit</th><th>step</th><th>tokens/s</th><th>history</th><th>loss</th><th>tput flat</th><th>loss flat</th><th>zero grad</th><th>non-finite</th><th>gate</th><th class="l">anomaly</th></tr>' + rows + '</table>' +
      (audit ? '<div class="audit">' + audit + '</div>' : '') + '</div>';
  }).join('');
}
async function tick() {
  try {
    const res = await fetch('/api/status', {cache: 'no-store'});
    if (!res.ok) throw new Error('HTTP ' + res.status);
    const d = await res.json();
    document.getElementById('runs').innerHTML = render(d);
    document.getElementById('updated').textContent = new Date().toLocaleTimeString();
    document.getElementById('err').textContent = '';
  } catch (e) {
    document.getElementById('err').textContent = 'cannot reach trainwatch: ' + e.message;
  }
}
tick(); setInterval(tick, 2000);
</script></body></html>
`;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}
