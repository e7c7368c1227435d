// Renders the exposition text from current state at scrape time. Series of expired or removed
// runs simply are not rendered, so they go away with the run.
//
// Why not prom-client gauges here: setting 10,000 ranks × 30 label sets through prom-client's
// label hashing on every scrape costs far more than the 100 ms scrape budget. We build the
// text directly from METRICS (the one list), and prom-client serves only its process_* and
// nodejs_* defaults, appended after ours.
import type { Thresholds } from '../config/settings.js';
import { effectiveStallS, stepLags } from '../detect/detect.js';
import { MSG_CLASSES, type RankState } from '../state/rank.js';
import type { Watcher } from '../watch/watcher.js';
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
  /** `{run="…",rank="…"}`, built once per scrape */
  labels: string;
  runLabel: string;
  stallS: number;
  lag?: number;
  alive?: boolean;
  anomalies?: Set<string>;
}

type Getter = (v: RankView, now: number, fetchWarmupN: number) => number | undefined;

/** The per-rank gauges, in exposition order: each family is written whole, then the next. */
const RANK_GAUGES: Array<[MetricKey, Getter]> = [
  ['heartbeatLastTs', (v) => v.s.lastLivenessTs],
  ['heartbeatAge', (v, now) => (v.s.lastLivenessTs === undefined ? undefined : Math.max(0, now - v.s.lastLivenessTs))],
  ['stallThreshold', (v) => v.stallS],
  ['dumpLastTs', (v) => v.s.lastDumpTs],
  ['bootTs', (v) => v.s.bootTs],
  ['progressLastTs', (v) => v.s.lastProgressTs],
  ['step', (v) => v.s.step],
  ['stepChangeTs', (v) => v.s.stepChangedTs],
  ['stepLag', (v) => v.lag],
  ['toks', (v) => v.s.toksPerS],
  ['throughputFlatline', (v) => v.s.streaks.throughputZero],
  ['loss', (v) => v.s.loss],
  ['lossFlatline', (v) => v.s.streaks.lossSame],
  ['gradNorm', (v) => v.s.gradNorm],
  ['gradZero', (v) => v.s.streaks.gradZero],
  ['nonfinite', (v) => v.s.streaks.nonfinite],
  ['fetch', (v) => v.s.dtFetchS],
  ['fetchBaseline', (v) => v.s.fetchBaseline],
  // Like the detector: no ratio during the warm-up, and a zero baseline makes any fetch +Inf.
  ['fetchRatio', (v, _now, warm) => {
    const { dtFetchS: dt, fetchBaseline: b } = v.s;
    if (dt === undefined || b === undefined || v.s.fetchSamples < warm) return undefined;
    return b > 0 ? dt / b : dt > 0 ? Infinity : 0;
  }],
  ['gpuAlloc', (v) => (v.s.gpuMemAllocMiB === undefined ? undefined : v.s.gpuMemAllocMiB * MIB)],
  ['gpuReserved', (v) => (v.s.gpuMemReservedMiB === undefined ? undefined : v.s.gpuMemReservedMiB * MIB)],
  ['gateEntropyMean', (v) => v.s.gateEntropyMean],
  ['gateEntropyMin', (v) => v.s.gateEntropyMin],
  ['gateMax', (v) => v.s.gateMaxGate],
  ['gateCollapseFrac', (v) => v.s.gateCollapseFrac],
  ['gateCollapse', (v) => v.s.streaks.gateCollapse],
  ['trainerUp', (v) => (v.alive === undefined ? undefined : v.alive ? 1 : 0)],
];

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

const CHUNK = 1 << 20;

/**
 * Writes families one after the other into byte chunks; a family with no samples is left out
 * entirely. Each sample line is encoded as soon as it is made, so no string outlives its line:
 * keeping 300,000 strings alive until a final join cost more in GC than everything else.
 */
class Exposition {
  private readonly chunks: Buffer[] = [];
  private buf = Buffer.allocUnsafe(CHUNK);
  private pos = 0;
  private open: MetricKey | undefined;

  /** One sample; `labels` is the whole `{…}` part (or ''). */
  add(key: MetricKey, labels: string, value: number | undefined): void {
    if (value === undefined) return;
    if (this.open !== key) {
      const m: MetricDef = METRICS[key];
      this.open = key;
      this.write(`# HELP ${m.name} ${m.help}\n# TYPE ${m.name} ${m.type}\n`);
    }
    this.write(METRICS[key].name + labels + ' ' + fmt(value) + '\n');
  }

  private write(line: string): void {
    // A UTF-8 character takes at most 3 bytes per UTF-16 unit.
    if (this.pos + line.length * 3 > this.buf.length) {
      this.chunks.push(this.buf.subarray(0, this.pos));
      this.buf = Buffer.allocUnsafe(Math.max(CHUNK, line.length * 3));
      this.pos = 0;
    }
    this.pos += this.buf.write(line, this.pos);
  }

  bytes(): Buffer {
    this.chunks.push(this.buf.subarray(0, this.pos));
    return Buffer.concat(this.chunks);
  }
}

/** Renders every trainwatch_* family for the watcher's current state at time `now`. */
export function renderMetrics(w: Watcher, now: number, version: string): Buffer {
  const f = new Exposition();
  const t = w.thresholds;
  const views: RankView[] = [];
  const live = [...w.runs.values()].filter((r) => !r.expired);
  for (const run of live) {
    const runLabel = `run="${esc(run.name)}"`;
    const lags = stepLags([...run.ranks.values()]);
    const active = new Map<number, Set<string>>();
    for (const a of run.anomalies) {
      if (!active.has(a.rank)) active.set(a.rank, new Set());
      active.get(a.rank)!.add(a.kind);
    }
    for (const s of run.ranks.values()) {
      views.push({
        s,
        labels: `{${runLabel},rank="${s.rank}"}`,
        runLabel,
        stallS: effectiveStallS(s, t),
        lag: lags.get(s.rank),
        alive: t.crashDetect && s.pid !== undefined ? run.alive.get(s.pid) : undefined,
        anomalies: active.get(s.rank),
      });
    }
  }
  for (const [key, get] of RANK_GAUGES) for (const v of views) f.add(key, v.labels, get(v, now, t.fetchWarmupN));
  for (const v of views) {
    const base = `{${v.runLabel},rank="${v.s.rank}",msg="`;
    for (const cls of MSG_CLASSES) if (v.s.records[cls] > 0) f.add('records', base + cls + '"}', v.s.records[cls]);
  }
  // Only active anomalies are exported (like ALERTS): nine zero series per rank would
  // multiply the cardinality of a 10,000-rank fleet for no information.
  for (const v of views) for (const k of v.anomalies ?? []) f.add('anomaly', `{${v.runLabel},rank="${v.s.rank}",anomaly_type="${k}"}`, 1);
  for (const run of live) f.add('runHalted', `{run="${esc(run.name)}"}`, run.halted ? 1 : 0);
  for (const run of live) f.add('runRanks', `{run="${esc(run.name)}"}`, run.ranks.size);
  for (const [key, field] of [['csvStep', 'step'], ['csvToks', 'toksPerS'], ['csvLoss', 'loss'], ['csvFlatline', 'throughputZero']] as const) {
    for (const run of live) if (run.csv) f.add(key, `{run="${esc(run.name)}"}`, run.csv[field]);
  }
  for (const [key, field] of THRESHOLD_GAUGES) f.add(key, '', t[field]);
  f.add('haltEnabled', '', w.config.halt ? 1 : 0);
  f.add('embeddedActions', '', w.acting ? 1 : 0);
  f.add('buildInfo', `{version="${esc(version)}",nodejs_version="${esc(process.version)}",mode="${w.config.mode}"}`, 1);
  let files = 0;
  for (const r of w.runs.values()) files += r.tails.size;
  f.add('runsWatched', '', live.length);
  f.add('filesWatched', '', files);
  f.add('filesOpen', '', w.openFiles());
  f.add('pollingFallback', '', w.stats.pollingFallback ? 1 : 0);
  for (const [reason, n] of Object.entries(w.stats.parseErrors)) f.add('parseErrors', `{reason="${reason}"}`, n);
  f.add('bytesRead', '', w.stats.bytesRead);
  f.add('linesRead', '', w.stats.linesRead);
  f.add('runsExpired', '', w.stats.runsExpired);
  for (const [k, n] of w.stats.actions) {
    const [action, result] = k.split('|');
    f.add('actions', `{action="${esc(action!)}",result="${esc(result!)}"}`, n);
  }
  for (const [code, n] of w.stats.webhookRequests) f.add('webhookRequests', `{code="${code}"}`, n);
  for (const [result, n] of w.stats.webhookAlerts) f.add('webhookAlerts', `{result="${esc(result)}"}`, n);
  return f.bytes();
}
