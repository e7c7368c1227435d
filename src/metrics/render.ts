// Renders the exposition text from current state at scrape time. Series of expired or removed
// runs simply are not rendered, so they go away with the run.
//
// Why not prom-client gauges here: setting 10,000 ranks × 30 label sets through prom-client's
// label hashing on every scrape costs far more than the scrape budget (docs/benchmarks.md,
// section 3, has the figures behind this file's choices). We build the
// text directly from METRICS (the one list), and prom-client serves only its process_* and
// nodejs_* defaults, appended after ours.
//
// The text is written family by family straight into byte chunks. Per run and family, the
// renderer keeps the values it wrote last time and where their bytes are: if none changed, the
// bytes are copied instead of formatted again (at 10,000 ranks that is most rows of a quiet
// fleet; heartbeat_age changes at every scrape and is always written afresh).
import { RUN_STATES } from '../state/lifecycle.js';
import type { Thresholds } from '../config/settings.js';
import { effectiveStallS, stepLags } from '../detect/detect.js';
import { MSG_CLASSES, type RankState } from '../state/rank.js';
import type { Run, Watcher } from '../watch/watcher.js';
import { METRICS, type MetricDef, type MetricKey } from './names.js';

const MIB = 1024 * 1024;

/** Prometheus text for one value: NaN and ±Inf spelled the way the format wants. */
export function fmt(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** Escapes a label value. */
export function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

/** One rank as a scrape sees it: its state and what is derived per scrape. */
interface RankView {
  s: RankState;
  stallS: number;
  deadline?: number;
  lag?: number;
  alive?: boolean;
  anomalies?: Set<string>;
}

/** The per-rank gauges, in exposition order: each family is written whole, then the next. */
const RANK_GAUGES = [
  'heartbeatLastTs',
  'heartbeatAge',
  'stallThreshold',
  'stallDeadline',
  'dumpLastTs',
  'bootTs',
  'progressLastTs',
  'step',
  'stepChangeTs',
  'stepLag',
  'toks',
  'throughputFlatline',
  'loss',
  'lossFlatline',
  'gradNorm',
  'gradZero',
  'nonfinite',
  'fetch',
  'fetchBaseline',
  'fetchRatio',
  'gpuAlloc',
  'gpuReserved',
  'gateEntropyMean',
  'gateEntropyMin',
  'gateMax',
  'gateCollapseFrac',
  'gateCollapse',
  'trainerUp',
] as const satisfies readonly MetricKey[];
type RankGauge = (typeof RANK_GAUGES)[number];

/**
 * A rank's value of one gauge; undefined: no sample. One switch (a table of closures measured
 * the same; docs/benchmarks.md, section 3).
 */
function rankValue(key: RankGauge, v: RankView, now: number, warm: number): number | undefined {
  const s = v.s;
  switch (key) {
    case 'heartbeatLastTs':
      return s.lastLivenessTs;
    case 'heartbeatAge':
      return s.lastLivenessTs === undefined ? undefined : Math.max(0, now - s.lastLivenessTs);
    case 'stallThreshold':
      return v.stallS;
    case 'stallDeadline':
      return v.deadline;
    case 'dumpLastTs':
      return s.lastDumpTs;
    case 'bootTs':
      return s.bootTs;
    case 'progressLastTs':
      return s.lastProgressTs;
    case 'step':
      return s.step;
    case 'stepChangeTs':
      return s.stepChangedTs;
    case 'stepLag':
      return v.lag;
    case 'toks':
      return s.toksPerS;
    case 'throughputFlatline':
      return s.streaks.throughputZero;
    case 'loss':
      return s.loss;
    case 'lossFlatline':
      return s.streaks.lossSame;
    case 'gradNorm':
      return s.gradNorm;
    case 'gradZero':
      return s.streaks.gradZero;
    case 'nonfinite':
      return s.streaks.nonfinite;
    case 'fetch':
      return s.dtFetchS;
    case 'fetchBaseline':
      return s.fetchBaseline;
    case 'fetchRatio': {
      // Like the detector: no ratio during the warm-up, and a zero baseline makes any fetch +Inf.
      const { dtFetchS: dt, fetchBaseline: b } = s;
      if (dt === undefined || b === undefined || s.fetchSamples < warm) return undefined;
      return b > 0 ? dt / b : dt > 0 ? Infinity : 0;
    }
    case 'gpuAlloc':
      return s.gpuMemAllocMiB === undefined ? undefined : s.gpuMemAllocMiB * MIB;
    case 'gpuReserved':
      return s.gpuMemReservedMiB === undefined ? undefined : s.gpuMemReservedMiB * MIB;
    case 'gateEntropyMean':
      return s.gateEntropyMean;
    case 'gateEntropyMin':
      return s.gateEntropyMin;
    case 'gateMax':
      return s.gateMaxGate;
    case 'gateCollapseFrac':
      return s.gateCollapseFrac;
    case 'gateCollapse':
      return s.streaks.gateCollapse;
    case 'trainerUp':
      return v.alive === undefined ? undefined : v.alive ? 1 : 0;
    default:
      return key satisfies never;
  }
}

/** The thresholds in force, as gauges the alert rules join on. */
const THRESHOLD_GAUGES: Array<[MetricKey, keyof Omit<Thresholds, 'crashDetect'>]> = [
  ['thStall', 'stallS'],
  ['thGrace', 'startupGraceS'],
  ['thFlatline', 'flatlineN'],
  ['thLossFlatline', 'lossFlatlineN'],
  ['thGradZero', 'gradZeroN'],
  ['thNonfinite', 'nonfiniteN'],
  ['thFetchRatio', 'fetchStallRatio'],
  ['thGateCollapse', 'gateCollapseN'],
  ['thGateEntropyMin', 'gateEntropyMin'],
  ['thGateMax', 'gateMaxThreshold'],
  ['thGateFrac', 'gateCollapseFrac'],
  ['thStraggler', 'stragglerSteps'],
];

/** Where finished chunks go while the rest is rendered. */
export type Sink = (chunk: Buffer) => void;

/** Chunk size: plain-text scrapes send each chunk as soon as it is full. */
const CHUNK = 1 << 18;
/** The longest text of a value: String() of a double is at most 25 characters (-0.0000012345678901234567). */
const MAX_VALUE = 25;
const NL = 0x0a;
const SP = 0x20;
const CLOSE = 0x7d; // '}'

interface Family {
  name: Buffer;
  /** `# HELP …\n# TYPE …\n` */
  head: Buffer;
}
const FAMILY = Object.fromEntries(
  Object.entries(METRICS as Record<MetricKey, MetricDef>).map(([k, m]) => [
    k,
    { name: Buffer.from(m.name), head: Buffer.from(`# HELP ${m.name} ${m.help}\n# TYPE ${m.name} ${m.type}\n`) },
  ]),
) as Record<MetricKey, Family>;
/** `,msg="<class>"} ` per message class, for trainwatch_records_total. */
const MSG_SUFFIX = MSG_CLASSES.map((c) => Buffer.from(`,msg="${c}"} `));
const MSG_SUFFIX_MAX = Math.max(...MSG_SUFFIX.map((b) => b.length));
/** Cached row groups per run: one per rank gauge, then one for records_total (8 values per rank). */
const SLOTS = RANK_GAUGES.length + 1;
const RECORDS_SLOT = RANK_GAUGES.length;
const EMPTY = Buffer.alloc(0);

/**
 * The exposition under construction: byte chunks, written family by family. A family with no
 * samples is left out entirely (its HELP/TYPE too). No per-sample string outlives its line:
 * a string per sample kept alive until a final join is garbage on the scale of the whole body.
 */
class Out {
  readonly chunks: Buffer[] = [];
  buf = Buffer.allocUnsafe(CHUNK);
  pos = 0;
  private open: MetricKey | undefined;

  /** `sink` gets each chunk as soon as it is full, while the rest is still being rendered. */
  constructor(private readonly sink?: Sink) {}

  /** Makes `n` contiguous bytes of room. */
  room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    if (this.pos > 0) this.emit();
    this.buf = Buffer.allocUnsafe(Math.max(CHUNK, n));
    this.pos = 0;
  }

  private emit(): void {
    const chunk = this.buf.subarray(0, this.pos);
    this.chunks.push(chunk);
    this.sink?.(chunk);
  }

  /** The HELP/TYPE block, once, before the family's first sample. */
  head(key: MetricKey): void {
    if (this.open === key) return;
    this.open = key;
    const h = FAMILY[key].head;
    this.room(h.length);
    this.put(h);
  }

  /** Copies bytes in; the caller made room. */
  put(b: Buffer): void {
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** A value and the newline; the caller made room for MAX_VALUE + 1 bytes. */
  value(v: number): void {
    const s = fmt(v);
    const b = this.buf;
    let p = this.pos;
    // ASCII only (digits, sign, '.', 'e', NaN, Inf): a loop beats a native call at this length.
    for (let i = 0; i < s.length; i++) b[p++] = s.charCodeAt(i);
    b[p++] = NL;
    this.pos = p;
  }

  /** One sample from strings; `labels` is the whole `{…}` part (or ''). For the few non-rank series. */
  add(key: MetricKey, labels: string, value: number | undefined): void {
    if (value === undefined) return;
    this.head(key);
    const line = METRICS[key].name + labels + ' ' + fmt(value) + '\n';
    // A UTF-8 character takes at most 3 bytes per UTF-16 unit.
    this.room(line.length * 3);
    this.pos += this.buf.write(line, this.pos);
  }

  done(): Buffer[] {
    if (this.pos > 0) this.emit();
    this.pos = this.buf.length; // nothing more goes into this chunk
    return this.chunks;
  }
}

/**
 * One run's ranks as the previous scrape rendered them. For each row group (a rank gauge
 * family, or records_total) it keeps the values it rendered and where the bytes went in that
 * scrape's chunks; a group whose values are all unchanged is copied from there instead of
 * being formatted again. Values are compared, not version-tracked, so a copied row can never
 * be stale: equal values give equal bytes (fmt(-0) = fmt(0), and every NaN prints NaN).
 */
class RunRows {
  states: RankState[] = [];
  views: RankView[] = [];
  /** per rank: `{run="…",rank="N"` in UTF-8 */
  labels: Buffer[] = [];
  labelBytes = 0;
  /** `{run="…"}` and `run="…"` for the per-run families and anomalies */
  readonly runOnly: string;
  readonly runLabel: string;
  /** [slot][rank] (records: [rank][class] after the gauges) → the value now; has = 0: absent */
  vals = new Float64Array(0);
  has = new Uint8Array(0);
  /** per slot, from sync(): did any value change since it was last rendered, and how many are present */
  private readonly changed = new Uint8Array(SLOTS);
  private readonly count = new Int32Array(SLOTS);
  /** per slot: the chunk, offset and length of its bytes last time; length -1: render afresh */
  private readonly segBuf: Buffer[] = new Array<Buffer>(SLOTS).fill(EMPTY);
  private readonly segOff = new Int32Array(SLOTS);
  private readonly segLen = new Int32Array(SLOTS).fill(-1);

  /** the run name the labels were built for (a name can change when another run takes the same one) */
  readonly name: string;

  constructor(readonly run: Run) {
    this.name = run.name;
    this.runLabel = `run="${esc(run.name)}"`;
    this.runOnly = `{${this.runLabel}}`;
  }

  /**
   * Reads every value of every rank and notes which slots changed. Rank by rank: each state
   * is read once here; one pass per family over states spread across the heap, a cache miss
   * each, was the render's largest cost (docs/benchmarks.md, section 3).
   */
  sync(t: Thresholds, now: number): void {
    const run = this.run;
    let same = run.ranks.size === this.states.length;
    if (same) {
      let i = 0;
      for (const s of run.ranks.values()) if (s !== this.states[i++]) same = false;
    }
    if (!same) {
      // A changed set of ranks drops everything kept.
      this.states = [...run.ranks.values()];
      this.labels = this.states.map((s) => Buffer.from(`{${this.runLabel},rank="${s.rank}"`));
      this.labelBytes = this.labels.reduce((a, b) => a + b.length, 0);
      this.views = this.states.map((s) => ({ s, stallS: 0, deadline: undefined, lag: undefined, alive: undefined, anomalies: undefined }));
      this.vals = new Float64Array((RANK_GAUGES.length + MSG_CLASSES.length) * this.states.length);
      this.has = new Uint8Array(this.vals.length);
      this.segLen.fill(-1);
    }
    const lags = stepLags(this.states);
    let active: Map<number, Set<string>> | undefined;
    for (const a of run.anomalies) {
      active ??= new Map();
      let set = active.get(a.rank);
      if (!set) active.set(a.rank, (set = new Set()));
      set.add(a.kind);
    }
    this.changed.fill(0);
    this.count.fill(0);
    const n = this.views.length;
    const g = RANK_GAUGES.length;
    for (let i = 0; i < n; i++) {
      const v = this.views[i];
      const s = v.s;
      v.stallS = effectiveStallS(s, t);
      v.lag = lags.get(s.rank);
      v.deadline = run.deadlines.get(s.rank)?.at;
      const proc = s.pid === undefined ? undefined : run.procs.get(s.pid);
      // Only with crash detection: the crash rule reads `== 0` as a crash.
      v.alive = !t.crashDetect ? undefined : proc === 'alive' ? true : proc === 'gone' ? false : undefined;
      v.anomalies = active?.get(s.rank);
      for (let k = 0; k < g; k++) this.note(k, k * n + i, rankValue(RANK_GAUGES[k], v, now, t.fetchWarmupN));
      const base = g * n + i * MSG_CLASSES.length;
      for (let c = 0; c < MSG_CLASSES.length; c++) {
        const count = s.records[MSG_CLASSES[c]];
        this.note(RECORDS_SLOT, base + c, count > 0 ? count : undefined);
      }
    }
  }

  /** Stores a slot's value and counts it; flags the slot if the value differs from the one rendered last. */
  private note(slot: number, j: number, v: number | undefined): void {
    if (v === undefined) {
      if (this.has[j] === 0) return;
      this.has[j] = 0;
      this.dirty(slot);
      return;
    }
    this.count[slot]++;
    const old = this.vals[j];
    if (this.has[j] !== 0 && (v === old || (v !== v && old !== old))) return;
    this.has[j] = 1;
    this.vals[j] = v;
    this.dirty(slot);
  }

  /** The slot's kept bytes are stale from now on, even if this scrape fails before rendering it. */
  private dirty(slot: number): void {
    this.changed[slot] = 1;
    this.segLen[slot] = -1;
  }

  /** Copies the slot's bytes of the previous scrape if nothing changed; false if it must be rendered. */
  private reuse(out: Out, slot: number, key: MetricKey): boolean {
    const len = this.segLen[slot];
    if (this.changed[slot] !== 0 || len < 0) return false;
    if (len === 0) return true;
    out.head(key);
    out.room(len);
    const at = out.pos;
    this.segBuf[slot].copy(out.buf, at, this.segOff[slot], this.segOff[slot] + len);
    out.pos += len;
    this.remember(slot, out, at);
    return true;
  }

  private remember(slot: number, out: Out, at: number): void {
    // Writes past the room made are dropped silently (typed arrays): fail the scrape instead.
    if (out.pos > out.buf.length) throw new Error('metrics renderer wrote past the room it made');
    this.segBuf[slot] = out.pos > at ? out.buf : EMPTY;
    this.segOff[slot] = at;
    this.segLen[slot] = out.pos - at;
  }

  /** Writes this run's rows of one rank gauge. */
  gauge(out: Out, slot: number): void {
    const key = RANK_GAUGES[slot];
    if (this.reuse(out, slot, key)) return;
    const count = this.count[slot];
    if (count === 0) return this.remember(slot, out, out.pos);
    const name = FAMILY[key].name;
    out.head(key);
    out.room(count * (name.length + 2 + MAX_VALUE + 1) + this.labelBytes);
    const at = out.pos;
    const n = this.views.length;
    const base = slot * n;
    for (let i = 0; i < n; i++) {
      if (this.has[base + i] === 0) continue;
      out.put(name);
      out.put(this.labels[i]);
      out.buf[out.pos++] = CLOSE;
      out.buf[out.pos++] = SP;
      out.value(this.vals[base + i]);
    }
    this.remember(slot, out, at);
  }

  /** Writes this run's trainwatch_records_total rows (classes with a count > 0). */
  records(out: Out): void {
    if (this.reuse(out, RECORDS_SLOT, 'records')) return;
    const count = this.count[RECORDS_SLOT];
    if (count === 0) return this.remember(RECORDS_SLOT, out, out.pos);
    const name = FAMILY.records.name;
    const w = MSG_CLASSES.length;
    out.head('records');
    out.room(count * (name.length + MSG_SUFFIX_MAX + MAX_VALUE + 1) + w * this.labelBytes);
    const at = out.pos;
    const n = this.views.length;
    const base = RANK_GAUGES.length * n;
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < w; c++) {
        const j = base + i * w + c;
        if (this.has[j] === 0) continue;
        out.put(name);
        out.put(this.labels[i]);
        out.put(MSG_SUFFIX[c]);
        out.value(this.vals[j]);
      }
    }
    this.remember(RECORDS_SLOT, out, at);
  }
}

/**
 * Renders the trainwatch_* families of one watcher. Keeps, per run, what the previous scrape
 * rendered, so that rows whose values did not change are copied rather than formatted again.
 */
export class MetricsRenderer {
  private rows = new Map<Run, RunRows>();

  constructor(
    private readonly w: Watcher,
    private readonly version: string,
  ) {}

  /** The exposition at time `now`, as byte chunks in order; `sink` gets each one as it is finished. */
  render(now: number, sink?: Sink, http?: HttpCounters): Buffer[] {
    const w = this.w;
    const out = new Out(sink);
    const live = [...w.runs.values()].filter((r) => !r.expired);
    // Runs not rendered now (expired, dropped) lose their cache: it would pin old chunks.
    const rows = new Map<Run, RunRows>();
    for (const run of live) {
      const kept = this.rows.get(run);
      const rr = kept && kept.name === run.name ? kept : new RunRows(run);
      rr.sync(run.profile.thresholds, now);
      rows.set(run, rr);
    }
    this.rows = rows;
    for (let slot = 0; slot < RANK_GAUGES.length; slot++) for (const rr of rows.values()) rr.gauge(out, slot);
    for (const rr of rows.values()) rr.records(out);
    // Only active anomalies are exported (like ALERTS): nine zero series per rank would
    // multiply the cardinality of a 10,000-rank fleet for no information.
    for (const rr of rows.values()) {
      for (const v of rr.views) for (const k of v.anomalies ?? []) out.add('anomaly', `{${rr.runLabel},rank="${v.s.rank}",anomaly_type="${k}"}`, 1);
    }
    for (const rr of rows.values()) out.add('runHalted', rr.runOnly, rr.run.halted ? 1 : 0);
    // A state set: one series per state, 1 for the current one (OpenMetrics StateSet as gauges).
    for (const rr of rows.values()) for (const st of RUN_STATES) out.add('runState', `{${rr.runLabel},state="${st}"}`, rr.run.life.state === st ? 1 : 0);
    for (const rr of rows.values()) out.add('runAttempts', rr.runOnly, rr.run.attempt);
    for (const rr of rows.values()) out.add('runRanks', rr.runOnly, rr.run.ranks.size);
    for (const [key, field] of [
      ['csvStep', 'step'],
      ['csvToks', 'toksPerS'],
      ['csvLoss', 'loss'],
      ['csvFlatline', 'throughputZero'],
    ] as const) {
      for (const rr of rows.values()) if (rr.run.csv) out.add(key, rr.runOnly, rr.run.csv[field]);
    }
    // Per run: runs on different profiles have different thresholds, and the rules join on run.
    for (const [key, field] of THRESHOLD_GAUGES) for (const rr of rows.values()) out.add(key, rr.runOnly, rr.run.profile.thresholds[field]);
    for (const rr of rows.values()) out.add('runProfile', `{${rr.runLabel},profile="${esc(rr.run.profile.name)}"}`, 1);
    out.add('haltEnabled', '', w.config.halt ? 1 : 0);
    out.add('embeddedActions', '', w.acting ? 1 : 0);
    out.add('buildInfo', `{version="${esc(this.version)}",nodejs_version="${esc(process.version)}",mode="${w.config.mode}"}`, 1);
    let files = 0;
    for (const r of w.runs.values()) files += r.tails.size;
    out.add('runsWatched', '', live.length);
    out.add('filesWatched', '', files);
    out.add('filesOpen', '', w.openFiles());
    out.add('fdBudget', '', w.fdBudget.limit);
    out.add('fdDeferred', '', w.fdBudget.refused);
    out.add('runsPolled', '', w.runsPolled());
    out.add('pollingFallback', '', w.stats.pollingFallback ? 1 : 0);
    for (const [reason, n] of Object.entries(w.stats.parseErrors)) out.add('parseErrors', `{reason="${reason}"}`, n);
    out.add('bytesRead', '', w.stats.bytesRead);
    out.add('linesRead', '', w.stats.linesRead);
    out.add('runsExpired', '', w.stats.runsExpired);
    for (const [k, n] of w.stats.actions) {
      const [action, result] = k.split('|');
      out.add('actions', `{action="${esc(action)}",result="${esc(result)}"}`, n);
    }
    for (const [reason, n] of Object.entries(w.stats.auditErrors)) out.add('auditErrors', `{reason="${reason}"}`, n);
    out.add('auditRotations', '', w.stats.auditRotations);
    for (const [code, n] of w.stats.webhookRequests) out.add('webhookRequests', `{code="${code}"}`, n);
    for (const [k, n] of w.stats.notifications) {
      const [channel, result] = k.split('|');
      out.add('notifications', `{channel="${channel}",result="${result}"}`, n);
    }
    for (const [result, n] of w.stats.webhookAlerts) out.add('webhookAlerts', `{result="${esc(result)}"}`, n);
    if (http) {
      out.add('httpConnections', '', http.connections);
      for (const [reason, n] of http.refused) out.add('httpConnectionsRefused', `{reason="${reason}"}`, n);
      for (const [result, n] of http.basicAuth) out.add('basicAuth', `{result="${result}"}`, n);
      out.add('basicAuthBcrypt', '', http.bcrypt);
    }
    return out.done();
  }
}

/** Counters of the HTTP server (src/http/stats.ts), rendered after the watcher's. */
export interface HttpCounters {
  connections: number;
  refused: ReadonlyMap<string, number>;
  basicAuth: ReadonlyMap<string, number>;
  bcrypt: number;
}

/** One renderer per watcher, so that each scrape can reuse what the previous one rendered. */
const renderers = new WeakMap<Watcher, MetricsRenderer>();

/** Renders every trainwatch_* family for the watcher's current state at time `now`, as byte chunks. */
export function renderMetrics(w: Watcher, now: number, version: string, sink?: Sink, http?: HttpCounters): Buffer[] {
  let r = renderers.get(w);
  if (!r) renderers.set(w, (r = new MetricsRenderer(w, version)));
  return r.render(now, sink, http);
}
