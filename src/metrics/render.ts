// Renders the exposition text from current state at scrape time. Series of expired or removed
// runs simply are not rendered, so they go away with the run.
//
// Why not prom-client gauges here: setting 10,000 ranks × 30 label sets through prom-client's
// label hashing on every scrape costs far more than the 100 ms scrape budget. We build the
// text directly from METRICS (the one list), and prom-client serves only its process_* and
// nodejs_* defaults, appended after ours.
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

/** Collects samples per metric, then writes each family once with its HELP and TYPE. */
class Families {
  private readonly samples = new Map<MetricKey, string[]>();

  add(key: MetricKey, labels: string, value: number | undefined): void {
    if (value === undefined) return;
    let arr = this.samples.get(key);
    if (!arr) this.samples.set(key, (arr = []));
    arr.push(`${METRICS[key].name}${labels} ${fmt(value)}\n`);
  }

  text(): string {
    let out = '';
    for (const key of Object.keys(METRICS) as MetricKey[]) {
      const m: MetricDef = METRICS[key];
      const arr = this.samples.get(key);
      if (!arr) continue; // a family with no samples is left out entirely
      out += `# HELP ${m.name} ${m.help}\n# TYPE ${m.name} ${m.type}\n` + arr.join('');
    }
    return out;
  }
}

/** Renders every trainwatch_* family for the watcher's current state at time `now`. */
export function renderMetrics(w: Watcher, now: number, version: string): string {
  const f = new Families();
  const t = w.thresholds;
  for (const run of w.runs.values()) {
    if (run.expired) continue;
    const rl = `run="${esc(run.name)}"`;
    f.add('runHalted', `{${rl}}`, run.halted ? 1 : 0);
    f.add('runRanks', `{${rl}}`, run.ranks.size);
    if (run.csv) {
      f.add('csvStep', `{${rl}}`, run.csv.step);
      f.add('csvToks', `{${rl}}`, run.csv.toksPerS);
      f.add('csvLoss', `{${rl}}`, run.csv.loss);
      f.add('csvFlatline', `{${rl}}`, run.csv.throughputZero);
    }
    const lags = stepLags([...run.ranks.values()]);
    const active = new Map<string, Set<string>>();
    for (const a of run.anomalies) {
      const k = String(a.rank);
      if (!active.has(k)) active.set(k, new Set());
      active.get(k)!.add(a.kind);
    }
    for (const s of run.ranks.values()) {
      const l = `{${rl},rank="${s.rank}"}`;
      rankSamples(f, s, l, now, effectiveStallS(s, t), lags.get(s.rank), t.fetchWarmupN);
      for (const cls of MSG_CLASSES) if (s.records[cls] > 0) f.add('records', `{${rl},rank="${s.rank}",msg="${cls}"}`, s.records[cls]);
      if (t.crashDetect && s.pid !== undefined) {
        const alive = run.alive.get(s.pid);
        if (alive !== undefined) f.add('trainerUp', l, alive ? 1 : 0);
      }
      // Only active anomalies are exported (like ALERTS): nine zero series per rank would
      // multiply the cardinality of a 10,000-rank fleet for no information.
      for (const k of active.get(String(s.rank)) ?? []) f.add('anomaly', `{${rl},rank="${s.rank}",anomaly_type="${k}"}`, 1);
    }
  }
  f.add('thStall', '', t.stallS);
  f.add('thGrace', '', t.startupGraceS);
  f.add('thFlatline', '', t.flatlineN);
  f.add('thLossFlatline', '', t.lossFlatlineN);
  f.add('thGradZero', '', t.gradZeroN);
  f.add('thNonfinite', '', t.nonfiniteN);
  f.add('thFetchRatio', '', t.fetchStallRatio);
  f.add('thGateCollapse', '', t.gateCollapseN);
  f.add('thGateEntropyMin', '', t.gateEntropyMin);
  f.add('thGateMax', '', t.gateMaxThreshold);
  f.add('thGateFrac', '', t.gateCollapseFrac);
  f.add('thStraggler', '', t.stragglerSteps);
  f.add('haltEnabled', '', w.config.halt ? 1 : 0);
  f.add('embeddedActions', '', w.acting ? 1 : 0);
  f.add('buildInfo', `{version="${esc(version)}",nodejs_version="${esc(process.version)}",mode="${w.config.mode}"}`, 1);
  let live = 0;
  let files = 0;
  for (const r of w.runs.values()) {
    if (!r.expired) live++;
    files += r.tails.size;
  }
  f.add('runsWatched', '', live);
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
  return f.text();
}

function rankSamples(f: Families, s: RankState, l: string, now: number, stallS: number, lag: number | undefined, fetchWarmupN: number): void {
  f.add('heartbeatLastTs', l, s.lastLivenessTs);
  if (s.lastLivenessTs !== undefined) f.add('heartbeatAge', l, Math.max(0, now - s.lastLivenessTs));
  f.add('stallThreshold', l, stallS);
  f.add('dumpLastTs', l, s.lastDumpTs);
  f.add('bootTs', l, s.bootTs);
  f.add('progressLastTs', l, s.lastProgressTs);
  f.add('step', l, s.step);
  f.add('stepChangeTs', l, s.stepChangedTs);
  f.add('stepLag', l, lag);
  f.add('toks', l, s.toksPerS);
  f.add('throughputFlatline', l, s.streaks.throughputZero);
  f.add('loss', l, s.loss);
  f.add('lossFlatline', l, s.streaks.lossSame);
  f.add('gradNorm', l, s.gradNorm);
  f.add('gradZero', l, s.streaks.gradZero);
  f.add('nonfinite', l, s.streaks.nonfinite);
  f.add('fetch', l, s.dtFetchS);
  f.add('fetchBaseline', l, s.fetchBaseline);
  // Like the detector: no ratio during the warm-up, and a zero baseline makes any fetch +Inf.
  if (s.dtFetchS !== undefined && s.fetchBaseline !== undefined && s.fetchSamples >= fetchWarmupN) {
    f.add('fetchRatio', l, s.fetchBaseline > 0 ? s.dtFetchS / s.fetchBaseline : s.dtFetchS > 0 ? Infinity : 0);
  }
  if (s.gpuMemAllocMiB !== undefined) f.add('gpuAlloc', l, s.gpuMemAllocMiB * MIB);
  if (s.gpuMemReservedMiB !== undefined) f.add('gpuReserved', l, s.gpuMemReservedMiB * MIB);
  f.add('gateEntropyMean', l, s.gateEntropyMean);
  f.add('gateEntropyMin', l, s.gateEntropyMin);
  f.add('gateMax', l, s.gateMaxGate);
  f.add('gateCollapseFrac', l, s.gateCollapseFrac);
  f.add('gateCollapse', l, s.streaks.gateCollapse);
}
