// The built-in status page: one self-contained HTML document (no CDN: clusters are often
// air-gapped). The server renders the runs into the first response, so the page is usable with
// JavaScript off and never shows an empty "Loading" state; the same document is embedded as JSON
// for the script, which then polls api/status and redraws in place. It is served by the same
// app as /metrics, so it sits behind the same basic auth and TLS, and the browser re-sends the
// credentials with its same-origin fetches. URLs are relative so the page also works behind a
// reverse proxy that mounts trainwatch under a sub-path.
//
// The view functions below run twice: here on the server, and in the browser, where the page
// ships their own source (fn.toString()). So they are plain self-contained functions: no
// imports, no module state but VIEW, and every string they emit goes through esc().
//
// At 200 runs the page stays an overview: the server sorts runs by urgency, halted, finished
// and expired runs are one line each (a <details> that opens on click), rank tables are only
// built for open runs, and the summary bar's state counts are links (?state=a,b) that filter.
// Memory stays bounded however long the tab is open: the page keeps only the newest status
// document, at most MAX_ROWS rank rows per run unless a run is expanded, and the last
// AUDIT_LINES audit entries per run.
import { createHash } from 'node:crypto';
import type { StatusDoc } from './status.js';

type Doc = StatusDoc;
type RunDoc = Doc['runs'][number];
type RankDoc = RunDoc['ranks'][number];
/** What the viewer changed: runs whose rank list is expanded, runs opened or closed by hand, the state filter. */
interface Ui {
  expanded: Set<string>;
  open: Map<string, boolean>;
  filter: Set<string>;
}

/** Constants shared by the server and the browser copy of the view. */
const VIEW = {
  MAX_ROWS: 64,
  AUDIT_LINES: 8,
  /** summary bar order (most urgent first) and labels */
  STATES: [
    ['anomalous', 'anomalous'],
    ['halt_requested', 'halt requested'],
    ['crashed', 'crashed'],
    ['starting', 'starting'],
    ['training', 'training'],
    ['halted', 'halted'],
    ['finished', 'finished'],
    ['expired', 'expired'],
  ],
  /** states that need nobody: one line each unless opened */
  COLLAPSED: ['halted', 'finished', 'expired'],
  /** rank table columns: label, what it means (the legend), class */
  COLUMNS: [
    ['rank', "DDP rank; boot-only ranks write no periodic records by design (rank 0's progress needs every rank).", 'l'],
    [
      'heartbeat / limit',
      'Age of the newest liveness record / the stall threshold in force (the startup grace until the run trains). "dump": judged by a stack dump of the trainer\'s own watchdog. "–": silence is not judged now.',
      '',
    ],
    ['step', 'Newest training step.', ''],
    ['tokens/s', 'Global tokens per second from the newest progress record.', ''],
    ['history', 'tokens/s over the last progress records, from 0 to the window maximum.', ''],
    ['loss', 'Loss from the newest progress record.', ''],
    ['tput flat', 'Progress records in a row with toks_per_s <= 0 / records that raise throughput_flatline.', ''],
    ['loss flat', 'Progress records in a row with the identical loss / records that raise loss_flatline.', ''],
    ['zero grad', 'Progress records in a row with grad_norm == 0 / records that raise zero_grad.', ''],
    ['non-finite', 'Progress records in a row with a NaN or infinite loss or grad_norm / records that raise nonfinite_loss.', ''],
    ['gate', 'Progress records in a row with collapsed NSA gates / records that raise gate_collapse.', ''],
    ['anomaly', 'Anomalies the detector sees now on this rank.', 'l'],
  ],
  /** what a rank's stall deadline is measured from (detect.ts stallDeadlines) */
  BASIS: {
    silence: 'Stalled once silent for the stall threshold.',
    startup: 'No rank trains yet: silence is judged under the startup grace.',
    acknowledged: 'Cleared by an operator: waiting for a new trainer under the startup grace.',
    own_dump: "The trainer's own watchdog dumped stacks after this rank's last record: a hang.",
    peer_dump: 'This boot-only rank dumped stacks while the periodic writers went silent too.',
  } as Record<string, string>,
  LIVENESS: {
    verified: ['pid alive', "The trainer's pid is alive on this host."],
    exited: ['trainer exited', "The trainer's pid is gone on this host."],
    unknown: [
      'liveness unknown',
      "trainwatch cannot see the trainer's process from here: a finished run and a hung run look alike, so a silent run is judged by its heartbeats alone.",
    ],
  } as Record<string, [string, string]>,
};

function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}
function isNum(v: unknown): v is number {
  return typeof v === 'number' && isFinite(v);
}
function fmtAge(s: number | undefined | null): string {
  return s === undefined || s === null ? '–' : s < 120 ? s.toFixed(1) + 's' : s < 7200 ? (s / 60).toFixed(1) + 'm' : (s / 3600).toFixed(1) + 'h';
}
function fmtInt(v: unknown): string {
  return isNum(v) ? Math.round(v).toLocaleString('en-US') : v === undefined || v === null ? '–' : esc(v);
}
function fmtReal(v: unknown): string {
  return isNum(v) ? (Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en-US') : v.toPrecision(4)) : v === undefined || v === null ? '–' : esc(v);
}
/** The document's time as HH:MM:SS UTC. */
function fmtClock(unixS: number): string {
  return new Date(unixS * 1000).toISOString().slice(11, 19) + ' UTC';
}

function spark(vals: number[]): string {
  if (!vals || !vals.length) return '';
  const w = 88,
    h = 20,
    pad = 2,
    max = Math.max(...vals, 1e-9),
    min = Math.min(...vals);
  const x = (i: number) => (vals.length === 1 ? w : (i * w) / (vals.length - 1));
  const y = (v: number) => h - pad - (Math.max(0, v) / max) * (h - 2 * pad);
  const pts = vals.map((v, i) => x(i).toFixed(1) + ',' + y(v).toFixed(1)).join(' ');
  return (
    '<svg width="' +
    w +
    '" height="' +
    h +
    '" role="img" aria-label="tokens per second history"><title>last ' +
    vals.length +
    ' progress records: min ' +
    fmtReal(min) +
    ', max ' +
    fmtReal(max) +
    ' tokens/s</title>' +
    '<line x1="0" x2="' +
    w +
    '" y1="' +
    (h - pad) +
    '" y2="' +
    (h - pad) +
    '" stroke="currentColor" stroke-opacity=".15"/>' +
    '<polyline fill="none" stroke="var(--spark)" stroke-width="1.5" stroke-linejoin="round" points="' +
    pts +
    '"/></svg>'
  );
}

function streakCell(s: { value: number; threshold: number } | undefined): string {
  if (!s) return '<td class="off">–</td>';
  if (!s.threshold) return '<td class="off" title="rule disabled (threshold 0)">' + s.value + ' / off</td>';
  // A streak of 1 is just the newest record; colour only once it is half-way to firing.
  const cls = s.value >= s.threshold ? 'bad' : s.value >= Math.max(2, Math.ceil(s.threshold / 2)) ? 'warn' : '';
  return '<td class="' + cls + '">' + s.value + ' / ' + s.threshold + '</td>';
}

/** Heartbeat age against the rank's stall deadline, or a muted age where silence is not judged. */
function ageCell(k: RankDoc, now: number): string {
  if (!k.deadline) {
    const why =
      k.role === 'boot_only'
        ? "Boot-only rank: not judged by its own silence while the run trains (rank 0's progress needs every rank)."
        : 'No stall deadline: the trainer exited, .HALT is there, or no record yet.';
    return '<td class="off" title="' + esc(why) + '">' + fmtAge(k.age) + ' / –</td>';
  }
  const basis = k.deadline.basis;
  const cls = k.deadline.at <= now ? 'bad' : isNum(k.age) && k.age > k.stallS / 2 ? 'warn' : '';
  return (
    '<td class="' +
    cls +
    '" title="' +
    esc(VIEW.BASIS[basis] || basis) +
    '">' +
    fmtAge(k.age) +
    ' / ' +
    (basis === 'own_dump' || basis === 'peer_dump' ? 'dump' : fmtAge(k.stallS)) +
    '</td>'
  );
}

function rankRow(k: RankDoc, now: number): string {
  const st = k.streaks || {};
  const lossCls = typeof k.loss === 'string' ? 'bad' : '';
  const role =
    k.role === 'boot_only'
      ? ' <span class="role" title="Writes boot records only (silent by design); rank 0\'s progress shows it is alive">boot-only</span>'
      : '';
  return (
    '<tr data-rank="' +
    esc(k.rank) +
    '" data-state="' +
    esc(k.anomalies.length ? k.anomalies.join(' ') : 'ok') +
    '">' +
    '<td class="l">' +
    esc(k.rank) +
    role +
    '</td>' +
    ageCell(k, now) +
    '<td>' +
    fmtInt(k.step) +
    '</td><td>' +
    fmtReal(k.toksPerS) +
    '</td><td>' +
    spark(k.toksHistory) +
    '</td>' +
    '<td class="' +
    lossCls +
    '">' +
    fmtReal(k.loss) +
    '</td>' +
    streakCell(st.throughput_flatline) +
    streakCell(st.loss_flatline) +
    streakCell(st.zero_grad) +
    streakCell(st.nonfinite_loss) +
    streakCell(st.gate_collapse) +
    '<td class="l' +
    (k.anomalies.length ? ' bad' : '') +
    '">' +
    (k.anomalies.map(esc).join(', ') || '–') +
    '</td></tr>'
  );
}

/** At most MAX_ROWS ranks unless expanded: ranks with anomalies first, then the oldest heartbeats. */
function visibleRanks(r: RunDoc, ui: Ui): RankDoc[] {
  if (r.ranks.length <= VIEW.MAX_ROWS || ui.expanded.has(r.run)) return r.ranks;
  const pick = r.ranks
    .slice()
    .sort((a, b) => Number(b.anomalies.length > 0) - Number(a.anomalies.length > 0) || (b.age || 0) - (a.age || 0))
    .slice(0, VIEW.MAX_ROWS);
  return pick.sort((a, b) => a.rank - b.rank);
}

function tableHead(): string {
  // Widths come from the stylesheet (th:nth-child), explanations from the legend: a table head
  // is repeated for every open run, so it carries only the labels.
  return '<thead><tr>' + VIEW.COLUMNS.map((c) => '<th' + (c[2] ? ' class="' + c[2] + '"' : '') + '>' + c[0] + '</th>').join('') + '</tr></thead>';
}

function rankTable(r: RunDoc, ui: Ui, now: number): string {
  const shown = visibleRanks(r, ui);
  let rows = shown.map((k) => rankRow(k, now)).join('');
  if (shown.length < r.ranks.length || (ui.expanded.has(r.run) && r.ranks.length > VIEW.MAX_ROWS)) {
    rows +=
      '<tr><td class="more" colspan="12">' +
      (shown.length < r.ranks.length
        ? 'Showing ' +
          shown.length +
          ' of ' +
          r.ranks.length +
          ' ranks: those with anomalies first, then the oldest heartbeats.<button type="button" data-expand="' +
          esc(r.run) +
          '">show all</button>'
        : 'Showing all ' + r.ranks.length + ' ranks.<button type="button" data-collapse="' + esc(r.run) + '">show fewer</button>') +
      '</td></tr>';
  }
  return '<div class="scroll"><table>' + tableHead() + '<tbody>' + rows + '</tbody></table></div>';
}

function stateLabel(state: string): string {
  const hit = VIEW.STATES.find((s) => s[0] === state);
  return hit ? hit[1] : state;
}

/** Open by default unless the state needs nobody; the viewer's own click wins. */
function isOpen(r: RunDoc, ui: Ui): boolean {
  const mine = ui.open.get(r.run);
  return mine === undefined ? VIEW.COLLAPSED.indexOf(r.state) < 0 : mine;
}

function renderRun(r: RunDoc, ui: Ui, now: number): string {
  const open = isOpen(r, ui);
  const sev = r.primary ? r.primary.severity : '';
  const live = VIEW.LIVENESS[r.liveness] || [String(r.liveness), ''];
  // Shown twice: in the summary line, and in the body's directory line.
  const liveSpan = '<span class="live ' + esc(r.liveness) + '" title="' + esc(live[1]) + '">' + esc(live[0]) + '</span>';
  const steps = r.ranks.map((k) => k.step).filter(isNum);
  const info = r.ranks.length + (r.ranks.length === 1 ? ' rank' : ' ranks') + (steps.length ? ' · step ' + fmtInt(Math.max(...steps)) : '');
  let body = '';
  if (r.primary) {
    body +=
      '<div class="line primary"><span class="k">primary anomaly</span><span class="sev ' +
      esc(sev) +
      '">' +
      esc(sev) +
      '</span> <b>' +
      esc(r.primary.kind) +
      '</b> on rank ' +
      esc(r.primary.rank) +
      ': ' +
      esc(r.primary.message) +
      '</div>';
  }
  if (r.halt && (r.state === 'halted' || r.state === 'halt_requested')) {
    body +=
      '<div class="line halt-reason"><span class="k">halt reason</span><b>' +
      esc(r.halt.kind || 'not given in .HALT') +
      '</b>, .HALT written by ' +
      esc(r.halt.by) +
      '</div>';
  }
  body +=
    '<div class="line"><span class="k">directory</span><code class="dir">' +
    esc(r.dir) +
    '</code> · attempt ' +
    esc(r.attempt) +
    ' · profile <b class="profile" title="' +
    esc(r.profile.via === 'glob' ? 'chosen by a run.profile glob' : r.profile.via === 'file' ? 'named in .trainwatch-profile' : 'no run.profile glob matched') +
    '">' +
    esc(r.profile.name) +
    '</b>' +
    (r.profile.halt ? '' : ' (no auto-halt)') +
    ' · ' +
    info +
    ' · ' +
    liveSpan +
    '</div>';
  if (open) body += rankTable(r, ui, now);
  const audit = (r.audit || [])
    .slice(-VIEW.AUDIT_LINES)
    .reverse()
    .map((e) => esc([e.iso, e.event, e.kind, e.action ? e.action + '=' + e.result : '', e.message].filter(Boolean).join(' ')))
    .join('\n');
  if (audit) body += '<div class="audit" title="Newest actions and anomalies first">' + audit + '</div>';
  return (
    '<details class="run" data-run="' +
    esc(r.run) +
    '" data-state="' +
    esc(r.state) +
    '" data-severity="' +
    esc(sev) +
    '" data-anomalies="' +
    esc(r.anomalies.join(' ')) +
    '"' +
    (open ? ' open' : '') +
    '>' +
    '<summary><span class="badge ' +
    esc(r.state) +
    (sev ? ' ' + esc(sev) : '') +
    '">' +
    esc(stateLabel(r.state)) +
    '</span>' +
    '<span class="name" title="' +
    esc(r.run) +
    '">' +
    esc(r.run) +
    '</span>' +
    '<span class="reason" title="' +
    esc(r.reason) +
    '">' +
    esc(r.reason) +
    '</span>' +
    liveSpan +
    '</summary>' +
    '<div class="body">' +
    body +
    '</div></details>'
  );
}

/** ?state=a,b → the set of states to show (empty: all). */
function parseFilter(q: unknown): Set<string> {
  const known = VIEW.STATES.map((s) => s[0]);
  return new Set(
    String(q || '')
      .split(',')
      .map((s) => s.trim())
      .filter((s) => known.indexOf(s) >= 0),
  );
}

/** The query string that shows `states` (relative, so it works under any mount path). */
function filterHref(states: string[]): string {
  return states.length ? '?state=' + states.map(encodeURIComponent).join(',') : './';
}

/** The summary bar: a count per state; each count is a link that shows only that state. */
function renderSummary(d: Doc, ui: Ui): string {
  const all = '<a class="chip all' + (ui.filter.size ? '' : ' on') + '" href="./" data-filter=""><b>' + d.runs.length + '</b> runs</a>';
  return (
    all +
    VIEW.STATES.map((s) => {
      const n = (d.states as Record<string, number>)[s[0]] || 0;
      const on = ui.filter.has(s[0]);
      const cls = 'chip ' + s[0] + (on ? ' on' : '') + (n ? '' : ' zero');
      const label = '<i></i><b>' + n + '</b> ' + esc(s[1]);
      return n || on
        ? '<a class="' +
            cls +
            '" href="' +
            filterHref(on && ui.filter.size === 1 ? [] : [s[0]]) +
            '" data-filter="' +
            (on && ui.filter.size === 1 ? '' : s[0]) +
            '">' +
            label +
            '</a>'
        : '<span class="' + cls + '">' + label + '</span>';
    }).join('')
  );
}

/** The runs as HTML pieces, in the document's order (the server sorts them by urgency), after the filter. */
function runPieces(d: Doc, ui: Ui): string[] {
  if (!d.runs.length)
    return ['<div class="empty">No runs found yet. Point trainwatch at a run directory with --dir, or at a directory of runs with --root.</div>'];
  const runs = ui.filter.size ? d.runs.filter((r) => ui.filter.has(r.state)) : d.runs;
  const note = ui.filter.size
    ? [
        '<div class="filtered">Showing ' +
          runs.length +
          ' of ' +
          d.runs.length +
          ' runs: ' +
          [...ui.filter].map(stateLabel).map(esc).join(', ') +
          '. <a href="./" data-filter="">Show all</a></div>',
      ]
    : [];
  return note.concat(runs.map((r) => renderRun(r, ui, d.now)));
}

/** How many runs need a human now (page title and tab icon). */
function problems(d: Doc): number {
  const s = d.states as Record<string, number>;
  return (s.anomalous || 0) + (s.halt_requested || 0) + (s.crashed || 0);
}
function modeText(d: Doc): string {
  return 'mode ' + d.mode + (d.halt ? ', auto-halt on' : ', auto-halt off');
}
function iconHref(d: Doc): string {
  // A dot in the tab's icon: red while any run needs attention, so a background tab still tells.
  const dot = problems(d) ? '%23d93025' : d.runs.length ? '%23188038' : '%239aa0a6';
  return (
    'data:image/svg+xml,<svg xmlns=%22http://www.w3.org/2000/svg%22 viewBox=%220 0 16 16%22><circle cx=%228%22 cy=%228%22 r=%227%22 fill=%22' +
    dot +
    '%22/></svg>'
  );
}
function titleText(d: Doc): string {
  return (problems(d) ? '(' + problems(d) + ') ' : '') + 'trainwatch';
}

const SHARED = [
  esc,
  isNum,
  fmtAge,
  fmtInt,
  fmtReal,
  fmtClock,
  spark,
  streakCell,
  ageCell,
  rankRow,
  visibleRanks,
  tableHead,
  rankTable,
  stateLabel,
  isOpen,
  renderRun,
  parseFilter,
  filterHref,
  renderSummary,
  runPieces,
  problems,
  modeText,
  iconHref,
  titleText,
];

/** JSON that is safe inside a <script> element: no "</script", no HTML comment openers. */
function scriptJson(v: unknown): string {
  return JSON.stringify(v)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

const CSS = `
:root{--fg:#1d2330;--muted:#5f6673;--bg:#f6f7f9;--card:#fff;--line:#e4e7ec;--head:#f1f3f6;--ok:#188038;--okbg:#e6f4ea;--warn:#b06000;--warnbg:#fef7e0;--bad:#c5221f;--badbg:#fce8e6;--halt:#5f6368;--spark:#1a73e8;
--s-anomalous:#c5221f;--s-warning:#b06000;--s-halt_requested:#a50e8a;--s-crashed:#7a1613;--s-starting:#1967d2;--s-training:#188038;--s-halted:#5f6368;--s-finished:#3f6b8a;--s-expired:#9aa0a6}
@media (prefers-color-scheme:dark){:root{--fg:#e3e5e8;--muted:#9aa0a6;--bg:#17191c;--card:#202327;--line:#33373d;--head:#2a2d32;--ok:#81c995;--okbg:#1e3a29;--warn:#fdd663;--warnbg:#3d3420;--bad:#f28b82;--badbg:#4a2523;--halt:#9aa0a6;--spark:#8ab4f8;
--s-anomalous:#f28b82;--s-warning:#fdd663;--s-halt_requested:#ff8bcb;--s-crashed:#ee675c;--s-starting:#8ab4f8;--s-training:#81c995;--s-halted:#bdc1c6;--s-finished:#a8c7fa;--s-expired:#80868b}}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;padding:16px 24px 40px;color:var(--fg);background:var(--bg)}
a{color:var(--spark)}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:6px 18px;margin-bottom:12px}
h1{font-size:20px;margin:0}
.meta{color:var(--muted);font-size:13px}
#summary{display:flex;gap:6px;flex-wrap:wrap;margin:0 0 12px;position:sticky;top:0;z-index:2;background:var(--bg);padding:6px 0}
.chip{display:inline-flex;align-items:center;gap:5px;padding:2px 10px;border-radius:12px;background:var(--card);border:1px solid var(--line);font-size:13px;color:var(--fg);text-decoration:none}
a.chip:hover{border-color:var(--muted)}
.chip b{font-variant-numeric:tabular-nums}
.chip i{width:9px;height:9px;border-radius:50%;background:var(--c)}
.chip.on{border-color:var(--fg);box-shadow:inset 0 0 0 1px var(--fg);font-weight:600}
.chip.zero{color:var(--muted);opacity:.6}
#err{display:none;margin:0 0 12px;padding:8px 12px;border-radius:6px;background:var(--badbg);color:var(--bad);font-weight:600}
body.stale #err{display:block} body.stale #runs{opacity:.55}
.filtered{margin:0 0 8px;color:var(--muted);font-size:13px}.filtered.bad{color:var(--bad)}
.anomalous{--c:var(--s-anomalous)}.anomalous.warning,.anomalous.info{--c:var(--s-warning)}.halt_requested{--c:var(--s-halt_requested)}.crashed{--c:var(--s-crashed)}
.starting{--c:var(--s-starting)}.training{--c:var(--s-training)}.halted{--c:var(--s-halted)}.finished{--c:var(--s-finished)}.expired{--c:var(--s-expired)}
.run{--c:var(--s-training);background:var(--card);border:1px solid var(--line);border-left:5px solid var(--c);border-radius:5px;margin:0 0 3px;content-visibility:auto;contain-intrinsic-size:auto 30px}
.run[data-state=anomalous]{--c:var(--s-anomalous)}.run[data-state=anomalous][data-severity=warning],.run[data-state=anomalous][data-severity=info]{--c:var(--s-warning)}
.run[data-state=halt_requested]{--c:var(--s-halt_requested)}.run[data-state=crashed]{--c:var(--s-crashed)}.run[data-state=starting]{--c:var(--s-starting)}
.run[data-state=halted]{--c:var(--s-halted)}.run[data-state=finished]{--c:var(--s-finished)}.run[data-state=expired]{--c:var(--s-expired)}
.run[open]{margin:8px 0 10px}
summary{display:flex;align-items:center;gap:10px;padding:3px 10px;cursor:pointer;white-space:nowrap;min-width:0}
summary::-webkit-details-marker{display:none}summary::marker{content:''}
summary::before{content:'▸';color:var(--muted);font-size:11px;width:8px}
.run[open]>summary::before{content:'▾'}
.badge{flex:none;width:112px;text-align:center;padding:1px 0;border-radius:10px;font-size:12px;font-weight:600;color:#fff;background:var(--c)}
@media (prefers-color-scheme:dark){.badge{color:#17191c}}
.name{flex:none;width:26ch;overflow:hidden;text-overflow:ellipsis;font-weight:600}
.reason{flex:1;min-width:0;overflow:hidden;text-overflow:ellipsis;color:var(--muted)}
.run[data-state=anomalous] .reason,.run[data-state=halt_requested] .reason,.run[data-state=crashed] .reason{color:var(--fg)}
.live{flex:none;font-size:12px;color:var(--muted);white-space:nowrap}
.live.unknown{color:var(--warn);background:var(--warnbg);padding:0 6px;border-radius:8px;font-weight:600}
.body{padding:4px 12px 8px 30px;border-top:1px solid var(--line)}
.line{padding:1px 0;font-size:13px}
.line .k{display:inline-block;width:120px;color:var(--muted)}
.line code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
.line .dir{overflow-wrap:anywhere}
.sev{display:inline-block;padding:0 6px;margin-right:4px;border-radius:8px;font-size:11px;font-weight:600;text-transform:uppercase;background:var(--badbg);color:var(--bad)}
.sev.warning,.sev.info{background:var(--warnbg);color:var(--warn)}
.halt-reason b{color:var(--s-halt_requested)}
.scroll{overflow-x:auto;margin-top:6px}
table{border-collapse:collapse;width:100%;min-width:1040px;table-layout:fixed;font-variant-numeric:tabular-nums}
th:nth-child(1){width:110px}th:nth-child(2){width:150px}th:nth-child(3),th:nth-child(6){width:84px}th:nth-child(4){width:92px}th:nth-child(5){width:104px}th:nth-child(n+7):nth-child(-n+11){width:84px}
th,td{padding:3px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
th{background:var(--head);font-weight:600;font-size:12px;line-height:1.25}
td.l,th.l{text-align:left}
.role{font-size:11px;color:var(--muted)}
tr:last-child td{border-bottom:0}
td.warn{background:var(--warnbg);color:var(--warn)}
td.bad{background:var(--badbg);color:var(--bad);font-weight:600}
td.off{color:var(--muted)}
td.more{text-align:left;color:var(--muted)}
button{font:inherit;font-size:12px;padding:1px 8px;margin-left:8px;cursor:pointer}
svg{display:block;margin-left:auto}
.audit{margin-top:6px;font:12px/1.45 ui-monospace,SFMono-Regular,Menlo,monospace;color:var(--muted);max-height:calc(3 * 1.45em + 7px);overflow:auto;border-top:1px dashed var(--line);padding-top:6px;white-space:pre-wrap}
@media (max-width:820px){body{padding:12px 10px 30px}summary{gap:8px;padding:3px 6px}.badge{width:auto;padding:1px 8px}.name{width:auto;max-width:38%}.body{padding-left:14px}.line .k{width:auto;margin-right:8px}}
.legend{margin-top:18px;font-size:13px;color:var(--muted)}.legend summary{padding:0;gap:6px}.legend[open]>summary::before{content:"▾"}
.legend dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:8px 0 0 14px}.legend dt{font-weight:600;color:var(--fg)}.legend dd{margin:0}
.empty{padding:16px;background:var(--card);border:1px dashed var(--line);border-radius:6px;color:var(--muted)}
`;

// The browser half: state the viewer changes, polling, and the click handlers.
const SCRIPT = `
const POLL_MS = 2000;
const ui = {expanded: new Set(), open: new Map(), filter: parseFilter(new URLSearchParams(location.search).get('state'))};
let last = JSON.parse(document.getElementById('status-data').textContent), timer = null, inflight = false;

function draw() {
  const d = last;
  document.getElementById('mode').textContent = modeText(d);
  document.title = titleText(d);
  const link = document.getElementById('icon');
  if (link.getAttribute('href') !== iconHref(d)) link.setAttribute('href', iconHref(d));
  const names = new Set(d.runs.map(r => r.run));
  for (const n of ui.expanded) if (!names.has(n)) ui.expanded.delete(n);
  for (const n of ui.open.keys()) if (!names.has(n)) ui.open.delete(n);
  document.getElementById('summary').innerHTML = renderSummary(d, ui);
  patchRuns(document.getElementById('runs'), runPieces(d, ui));
}

// Only runs whose HTML changed are parsed again; the others keep their elements (and with them
// their scroll position and any text selected), which keeps a 200-run refresh cheap.
function patchRuns(main, parts) {
  const old = new Map();
  for (const el of main.children) if (el._html) old.set(el._html, el);
  const tpl = document.createElement('template');
  const nodes = parts.map(p => {
    const kept = old.get(p);
    if (kept) { old.delete(p); return kept; }
    tpl.innerHTML = p;
    const el = tpl.content.firstElementChild;
    if (el) el._html = p;
    return el;
  }).filter(Boolean);
  main.replaceChildren(...nodes);
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
    document.getElementById('updated').textContent = fmtClock(last.now);
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
  const f = e.target.closest('a[data-filter]');
  // A plain click filters in place; a modified click opens the link as links do.
  if (f && !(e.metaKey || e.ctrlKey || e.shiftKey || e.altKey || e.button)) {
    e.preventDefault();
    ui.filter = parseFilter(f.dataset.filter);
    document.getElementById('note')?.remove();
    history.replaceState(null, '', ui.filter.size ? filterHref([...ui.filter]) : location.pathname);
    draw();
    return;
  }
  const b = e.target.closest('button[data-expand],button[data-collapse]');
  if (!b) return;
  if (b.dataset.expand) ui.expanded.add(b.dataset.expand); else ui.expanded.delete(b.dataset.collapse);
  draw();
});
// 'toggle' does not bubble: listen while capturing. Redraws fire it too, with the state they drew.
document.addEventListener('toggle', e => {
  const el = e.target;
  if (!(el instanceof HTMLDetailsElement) || !el.dataset.run) return;
  const r = last.runs.find(x => x.run === el.dataset.run);
  if (!r || isOpen(r, ui) === el.open) return;
  const byDefault = VIEW.COLLAPSED.indexOf(r.state) < 0;
  if (el.open === byDefault) ui.open.delete(r.run); else ui.open.set(r.run, el.open);
  // An opened run gets its rank table.
  draw();
}, true);
document.addEventListener('visibilitychange', () => { if (!document.hidden) tick(); });
timer = setTimeout(tick, POLL_MS);
`;

/** The script after the embedded document: the shared view, then the browser half. Built once. */
const BROWSER_JS = `'use strict';
const VIEW = ${scriptJson(VIEW)};
${SHARED.map((f) => f.toString()).join('\n')}
${SCRIPT}`;
// The view's own source must not end the <script> element it is shipped in.
if (/<\/script|<!--/i.test(BROWSER_JS)) throw new Error('page.ts: the browser script holds "</script" or "<!--"');

const sha256 = (s: string) => `'sha256-${createHash('sha256').update(s, 'utf8').digest('base64')}'`;
/**
 * The status page's Content-Security-Policy: only its own inline script and style run (by hash:
 * both are built once, so the hashes are fixed), it may fetch only its own origin, and no page
 * may frame it. The JSON data block is not executed, so it needs no hash.
 */
export const PAGE_CSP = `default-src 'none'; script-src ${sha256(BROWSER_JS)}; style-src ${sha256(CSS)}; img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;

/** The status page HTML, with `doc` rendered in and embedded; `stateQuery` is the ?state= filter. */
export function statusPageHtml(version: string, metricsPath: string, doc: Doc, stateQuery?: unknown): string {
  const metricsHref = metricsPath.startsWith('/') ? '.' + metricsPath : metricsPath;
  const q = typeof stateQuery === 'string' ? stateQuery : '';
  const ui: Ui = { expanded: new Set(), open: new Map(), filter: parseFilter(q) };
  const known = VIEW.STATES.map((s) => s[0]);
  const unknown = q
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s && !known.includes(s));
  const note = unknown.length
    ? `<div id="note" class="filtered bad">Ignored unknown state ${unknown.map((s) => `"${esc(s)}"`).join(', ')} in ?state=. The states are: ${known.join(', ')}.</div>`
    : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(titleText(doc))}</title>
<link rel="icon" id="icon" href="${esc(iconHref(doc))}">
<style>${CSS}</style></head><body>
<header><h1>trainwatch</h1>
<span class="meta">version ${esc(version)} · <a href="${esc(metricsHref)}">metrics</a> · <a href="api/status">status JSON</a> · <span id="mode">${esc(modeText(doc))}</span> · updated <span id="updated">${esc(fmtClock(doc.now))}</span></span>
<noscript><span class="meta">JavaScript is off: reload to refresh.</span></noscript></header>
<div id="err" role="alert"></div>
<nav id="summary" aria-label="runs by state (links filter)">${renderSummary(doc, ui)}</nav>
${note}<main id="runs">${runPieces(doc, ui).join('')}</main>
<details class="legend"><summary>What the rank table's columns mean</summary><dl>${VIEW.COLUMNS.map((c) => `<dt>${esc(c[0])}</dt><dd>${esc(c[1])}</dd>`).join('')}</dl></details>
<script type="application/json" id="status-data">${scriptJson(doc)}</script>
<script>${BROWSER_JS}</script></body></html>
`;
}
