// Benchmark 7: Alertmanager webhook under a bounded loopback load, against the real trainwatch
// process (--mode alertmanager --halt 1, a bearer token file, --root with 50 run dirs of 8
// small heartbeat files each).
//
// The load is 20,000 alerts in Alertmanager-shaped payloads (version "4"), replaying a
// simulated 6 h of a fleet of 8 nodes whose trainwatches all receive every notification
// (broadcast): incidents are one anomaly kind on one run, 1 rank (70 %), 2–4 ranks (20 %) or
// all 8 (10 %), each rank one alert (own fingerprint and startsAt); group_by [alertname, run].
// Each incident yields the notifications Alertmanager sends: 'new' after group_wait (the first
// half of the ranks), an update after group_interval (all ranks), a repeat every 30 min while
// firing, and 'resolved' (send_resolved) after 15–120 min. Every notification is delivered by
// both members of an HA pair, and 5 % of deliveries are retried once (as after a timeout).
// So most alerts are for runs of other nodes ('not_ours'), many are duplicate deliveries, and
// some open an episode (.anomaly_type, .anomaly.json, .HALT, audit log, all fsynced) or join
// one. Deliveries are sent in time order by 32 workers over 32 keep-alive connections:
// (1) back to back (closed loop: the capacity, and latency at saturation), then (2) against a
// fresh process and root, offered at the target rate of 2,000 alerts/s (still ≤ 32 in flight).
//
// After each, the benchmark checks correctness: every request 200 (no 5xx), the 'not_ours'
// count is exactly the alerts for other nodes' runs, and per run the audit log has at most one
// episode per incident, each alert key in at most one anomaly/joined entry, each action at
// most once per episode, and the audit totals equal the 'acted'/'joined' results.
//
// Then, separately, the worst case: a fresh trainwatch and root of 100 runs, and one alert per
// payload, every one a new episode (9 kinds × 100 runs = 900 episodes): the rate when every
// alert does the whole set of durable writes (fsync-bound on a disk with slow fsync).
// Targets (mixed load, closed loop): ≥ 2,000 alerts/s and p99 request latency < 50 ms.
import { createHash } from 'node:crypto';
import { Agent, request } from 'node:http';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ANOMALY_KINDS } from '../src/detect/kinds.js';
import { runbookUrl } from '../src/gen/alerts.js';
import { benchTmp, bootLine, cpuSecondsOf, median, memOf, pct, prng, runMain, say, stepLines, type Row, type Tw, startTw } from './lib.js';

const NAME = 'webhook load, 20k alerts';
const TARGET = '≥ 2,000 alerts/s, p99 < 50 ms';
const TOTAL_ALERTS = Number(process.env.TW_BENCH_WEBHOOK_ALERTS ?? 20_000);
const CONCURRENCY = 32;
const NODES = 8;
const RUNS_PER_NODE = 50;
const RANKS = 8;
const WORST_RUNS = Number(process.env.TW_BENCH_WEBHOOK_WORST_RUNS ?? 100);
const TOKEN = 'bench-token-0123456789abcdef';
const HOURS = 6;

type Kind = (typeof ANOMALY_KINDS)[number];

interface AlertSpec {
  labels: Record<string, string>;
  fingerprint: string;
  startsAt: string;
  endsAt: string;
  status: 'firing' | 'resolved';
}

interface Delivery {
  /** simulated minutes */
  t: number;
  body: Buffer;
  alerts: number;
}

/** The result of one request. */
interface Res {
  status: number;
  ms: number;
  results: string[];
}

const iso = (min: number) => new Date(Date.UTC(2026, 10, 28, 0, 0, 0) + min * 60_000).toISOString();

function fingerprintOf(labels: Record<string, string>): string {
  const keys = Object.keys(labels).sort();
  return createHash('sha256')
    .update(keys.map((k) => `${k}=${labels[k]}`).join('\0'))
    .digest('hex')
    .slice(0, 16);
}

function payload(alerts: AlertSpec[], run: string, kind: Kind, reason: string): Buffer {
  const status = alerts.some((a) => a.status === 'firing') ? 'firing' : 'resolved';
  const common = { alertname: kind.alert, run, anomaly_type: kind.name, halt: String(kind.halts), severity: kind.severity, job: 'trainwatch' };
  return Buffer.from(
    JSON.stringify({
      version: '4',
      groupKey: `{}/{severity=~"critical|warning"}:{alertname="${kind.alert}", run="${run}"}`,
      truncatedAlerts: 0,
      status,
      receiver: 'trainwatch',
      groupLabels: { alertname: kind.alert, run },
      commonLabels: common,
      commonAnnotations: { summary: kind.summary },
      externalURL: 'http://alertmanager.monitoring.svc:9093',
      notification_reason: reason,
      alerts: alerts.map((a) => ({
        status: a.status,
        labels: a.labels,
        annotations: {
          summary: kind.summary,
          description: `Rank ${a.labels.rank} of run ${run}: ${kind.summary}`,
          // As Prometheus expands the default: the runbook this trainwatch serves.
          runbook_url: runbookUrl(kind.alert).replace('{{ $labels.instance }}', a.labels.instance ?? 'gpu-node-01:9465'),
        },
        startsAt: a.startsAt,
        endsAt: a.endsAt,
        generatorURL: `http://prometheus.monitoring.svc:9090/graph?g0.expr=${encodeURIComponent(kind.alert)}&g0.tab=1`,
        fingerprint: a.fingerprint,
      })),
    }),
  );
}

const runName = (node: number, r: number) => `n${node}-run${String(r).padStart(3, '0')}`;

/** The simulated day: deliveries in time order, and what the node-0 trainwatch should see. */
function scenario(total: number, seed: number) {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const deliveries: Delivery[] = [];
  /** incidents per run of node 0 (an upper bound of its episodes) */
  const incidentsOfRun = new Map<string, number>();
  let alerts = 0;
  let incidents = 0;
  const span = HOURS * 60;
  while (alerts < total) {
    incidents++;
    const node = Math.floor(rnd() * NODES);
    const run = runName(node, Math.floor(rnd() * RUNS_PER_NODE));
    const kind = pick(ANOMALY_KINDS);
    const u = rnd();
    const k = u < 0.7 ? 1 : u < 0.9 ? 2 + Math.floor(rnd() * 3) : RANKS;
    const first = Math.floor(rnd() * (RANKS - k + 1));
    const t0 = rnd() * span;
    const duration = 15 + rnd() * 105;
    const specs = Array.from({ length: k }, (_, i) => {
      const labels = {
        alertname: kind.alert,
        anomaly_type: kind.name,
        halt: String(kind.halts),
        instance: `gpu-node-${node}:9465`,
        job: 'trainwatch',
        rank: String(first + i),
        run,
        severity: kind.severity,
      };
      return { labels, fingerprint: fingerprintOf(labels), startsAt: iso(t0 + i * 0.05), endsAt: '0001-01-01T00:00:00Z', status: 'firing' as const };
    });
    const notes: Array<{ t: number; alerts: AlertSpec[]; reason: string }> = [];
    notes.push({ t: t0 + 0.5, alerts: specs.slice(0, Math.ceil(k / 2)), reason: 'new' });
    notes.push({ t: t0 + 5.5, alerts: specs, reason: 'update' });
    for (let t = t0 + 35.5; t < t0 + duration; t += 30) notes.push({ t, alerts: specs, reason: 'repeat' });
    const end = t0 + duration;
    notes.push({ t: end + 0.5, alerts: specs.map((s) => ({ ...s, status: 'resolved', endsAt: iso(end) })), reason: 'resolved' });
    if (node === 0) incidentsOfRun.set(run, (incidentsOfRun.get(run) ?? 0) + 1);
    for (const n of notes) {
      const body = payload(n.alerts, run, kind, n.reason);
      // both members of the HA pair deliver; 5 % of deliveries are retried once
      const copies = [n.t, n.t + rnd() * 0.03];
      for (const c of [...copies]) if (rnd() < 0.05) copies.push(c + 0.2);
      for (const t of copies) {
        deliveries.push({ t, body, alerts: n.alerts.length });
        alerts += n.alerts.length;
      }
    }
  }
  deliveries.sort((a, b) => a.t - b.t);
  // trim to exactly `total` alerts: drop whole deliveries from the end of the day
  let sum = 0;
  let cut = 0;
  for (; cut < deliveries.length && sum + deliveries[cut].alerts <= total; cut++) sum += deliveries[cut].alerts;
  const kept = deliveries.slice(0, cut);
  let notOurs = 0;
  for (const d of kept) if (!d.body.includes('"run":"n0-')) notOurs += d.alerts;
  return { deliveries: kept, alerts: sum, notOurs, incidents, incidentsOfRun };
}

/**
 * Sends every body with `conc` workers over `conc` keep-alive connections, in order. With
 * `atMs`, body i is not sent before atMs[i] after the start (an offered rate; still at most
 * `conc` in flight); without, as fast as the answers come back (closed loop).
 */
async function load(url: string, bodies: Buffer[], conc: number, atMs?: number[]): Promise<{ res: Res[]; wallS: number }> {
  const u = new URL(`${url}/webhook/alertmanager`);
  const agent = new Agent({ keepAlive: true, maxSockets: conc });
  const res: Res[] = new Array(bodies.length);
  let next = 0;
  const one = (body: Buffer) =>
    new Promise<Res>((resolve, reject) => {
      const t0 = performance.now();
      const req = request(
        {
          host: u.hostname,
          port: u.port,
          path: u.pathname,
          method: 'POST',
          agent,
          headers: { 'content-type': 'application/json', 'content-length': body.length, authorization: `Bearer ${TOKEN}` },
        },
        (r) => {
          const chunks: Buffer[] = [];
          r.on('data', (c: Buffer) => chunks.push(c));
          r.on('end', () => {
            const ms = performance.now() - t0;
            let results: string[] = [];
            try {
              results = ((JSON.parse(Buffer.concat(chunks).toString()) as { alerts?: Array<{ result: string }> }).alerts ?? []).map((a) => a.result);
            } catch {
              // a non-JSON answer: counted by its status
            }
            resolve({ status: r.statusCode ?? 0, ms, results });
          });
          r.on('error', reject);
        },
      );
      req.setTimeout(30_000, () => req.destroy(new Error('request timed out after 30 s')));
      req.on('error', reject);
      req.end(body);
    });
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: conc }, async () => {
      for (;;) {
        const i = next++;
        if (i >= bodies.length) return;
        const wait = atMs ? atMs[i] - (performance.now() - t0) : 0;
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        res[i] = await one(bodies[i]);
      }
    }),
  );
  const wallS = (performance.now() - t0) / 1000;
  agent.destroy();
  return { res, wallS };
}

function makeRoot(path: string, names: string[]): void {
  const rnd = prng(11);
  const now = Date.now() / 1000;
  for (const [r, name] of names.entries()) {
    const dir = join(path, name);
    mkdirSync(dir, { recursive: true });
    for (let k = 0; k < RANKS; k++) {
      const pid = 20_000 + r * RANKS + k;
      let text = bootLine(k, pid, now - 60);
      for (let s = 1; s <= 3; s++) text += stepLines({ rank: k, pid, step: 100 + s, ts: now - 10 + s, rnd });
      writeFileSync(join(dir, `heartbeat_rank${k}.jsonl`), text);
    }
  }
}

async function startAm(root: string, tokenFile: string): Promise<Tw> {
  // --run.ttl-s: the heartbeat files stay fresh enough for the whole benchmark anyway
  return startTw(['--root', root, '--mode', 'alertmanager', '--halt', '1', '--webhook.token-file', tokenFile]);
}

interface AuditLine {
  event: string;
  episode: string;
  key?: string;
  action?: string;
  result?: string;
}

/** Checks the audit logs of `runs` under `root`; returns the problems found and the totals. */
function checkAudit(root: string, runs: string[], incidentsOfRun: Map<string, number>) {
  const problems: string[] = [];
  let anomalies = 0;
  let joins = 0;
  let withHalt = 0;
  for (const run of runs) {
    const f = join(root, run, '.trainwatch-audit.jsonl');
    const lines: AuditLine[] = existsSync(f)
      ? readFileSync(f, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as AuditLine)
      : [];
    const eps = lines.filter((l) => l.event === 'anomaly');
    anomalies += eps.length;
    joins += lines.filter((l) => l.event === 'joined').length;
    const allowed = incidentsOfRun.get(run) ?? 0;
    if (eps.length > allowed) problems.push(`${run}: ${eps.length} episodes for ${allowed} incidents`);
    const keyUses = new Map<string, number>();
    for (const l of lines) if ((l.event === 'anomaly' || l.event === 'joined') && l.key) keyUses.set(l.key, (keyUses.get(l.key) ?? 0) + 1);
    for (const [key, n] of keyUses) if (n > 1) problems.push(`${run}: alert ${key} started/joined ${n} times`);
    const actions = new Map<string, number>();
    for (const l of lines)
      if (l.event === 'action' && l.result !== 'failed') actions.set(`${l.episode}/${l.action}`, (actions.get(`${l.episode}/${l.action}`) ?? 0) + 1);
    for (const [a, n] of actions) if (n > 1) problems.push(`${run}: action ${a} done ${n} times`);
    if (lines.some((l) => l.event === 'action' && l.action === 'halt' && l.result === 'ok')) {
      withHalt++;
      if (!existsSync(join(root, run, '.HALT'))) problems.push(`${run}: audit says .HALT was written, but it is not there`);
    }
    if (eps.length > 0 && !existsSync(join(root, run, '.anomaly_type'))) problems.push(`${run}: episodes but no .anomaly_type`);
  }
  return { problems, anomalies, joins, withHalt };
}

function tally(res: Res[]) {
  const statuses = new Map<number, number>();
  const results = new Map<string, number>();
  for (const r of res) {
    statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
    for (const x of r.results) results.set(x, (results.get(x) ?? 0) + 1);
  }
  return { statuses: Object.fromEntries(statuses), results: Object.fromEntries(results) };
}

/** The mixed load against a fresh trainwatch and root; `rate` = offered alerts/s (default: closed loop). */
async function mixed(dir: string, tokenFile: string, sc: ReturnType<typeof scenario>, warm: Buffer[], rate?: number) {
  const root = join(dir, 'runs');
  const ours = Array.from({ length: RUNS_PER_NODE }, (_, r) => runName(0, r));
  makeRoot(root, ours);
  const bodies = sc.deliveries.map((d) => d.body);
  let atMs: number[] | undefined;
  if (rate) {
    let sum = 0;
    atMs = sc.deliveries.map((d) => {
      const at = (sum / rate) * 1000;
      sum += d.alerts;
      return at;
    });
  }
  const label = rate ? `offered ${rate} alerts/s` : `closed loop`;
  const tw = await startAm(root, tokenFile);
  try {
    await load(tw.url, warm, CONCURRENCY);
    const memBefore = memOf(tw.pid);
    const cpu0 = cpuSecondsOf(tw.pid);
    const ccpu0 = process.cpuUsage();
    const { res, wallS } = await load(tw.url, bodies, CONCURRENCY, atMs);
    const twCpu = cpuSecondsOf(tw.pid) - cpu0;
    const cc = process.cpuUsage(ccpu0);
    const clientCpu = (cc.user + cc.system) / 1e6;
    const mem = memOf(tw.pid);
    const ms = res.map((r) => r.ms);
    const t = tally(res);
    const alertsPerS = sc.alerts / wallS;
    const reqPerS = bodies.length / wallS;
    const p50 = median(ms);
    const p99 = pct(ms, 99);
    const max = Math.max(...ms);
    say(
      `mixed, ${label}: ${bodies.length} requests, ${sc.alerts} alerts in ${wallS.toFixed(2)} s at concurrency ≤ ${CONCURRENCY}: ${alertsPerS.toFixed(0)} alerts/s, ${reqPerS.toFixed(0)} requests/s`,
    );
    // split: requests whose alerts were all for other nodes' runs, and the rest (they touch a run here)
    const foreign = res.filter((r) => r.results.every((x) => x === 'not_ours')).map((r) => r.ms);
    const local = res.filter((r) => !r.results.every((x) => x === 'not_ours')).map((r) => r.ms);
    const split = {
      foreign: { n: foreign.length, p50Ms: median(foreign), p99Ms: pct(foreign, 99) },
      local: { n: local.length, p50Ms: median(local), p99Ms: pct(local, 99) },
    };
    say(
      `  latency: p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${max.toFixed(1)} ms; all-not_ours requests (${foreign.length}): p50 ${split.foreign.p50Ms.toFixed(1)}, p99 ${split.foreign.p99Ms.toFixed(1)} ms; requests touching a run here (${local.length}): p50 ${split.local.p50Ms.toFixed(1)}, p99 ${split.local.p99Ms.toFixed(1)} ms`,
    );
    say(`  statuses ${JSON.stringify(t.statuses)}; results ${JSON.stringify(t.results)}`);
    say(
      `  trainwatch CPU ${twCpu.toFixed(2)} s (${((twCpu / wallS) * 100).toFixed(0)} % of a core), client CPU ${clientCpu.toFixed(2)} s; RSS ${(memBefore.rss / 1e6).toFixed(0)} → ${(mem.rss / 1e6).toFixed(0)} MB (peak ${(mem.hwm / 1e6).toFixed(0)} MB)`,
    );
    // ------------------------------------------------------------ correctness
    await tw.stop();
    const problems: string[] = [];
    const non200 = res.filter((r) => r.status !== 200).length;
    if (non200) problems.push(`${non200} requests not 200: ${JSON.stringify(t.statuses)}`);
    const got = (k: string) => (t.results[k] as number | undefined) ?? 0;
    const answered = Object.values(t.results).reduce((s: number, n) => s + n, 0);
    if (answered !== sc.alerts) problems.push(`${answered} alert results for ${sc.alerts} alerts`);
    if (got('not_ours') !== sc.notOurs) problems.push(`not_ours ${got('not_ours')}, expected ${sc.notOurs}`);
    for (const k of ['failed', 'rejected', 'unknown_kind']) if (got(k)) problems.push(`${got(k)} alerts ${k}`);
    const audit = checkAudit(root, ours, sc.incidentsOfRun);
    problems.push(...audit.problems);
    if (audit.anomalies !== got('acted')) problems.push(`${audit.anomalies} episodes in the audit logs, ${got('acted')} 'acted' answers`);
    if (audit.joins !== got('joined')) problems.push(`${audit.joins} joins in the audit logs, ${got('joined')} 'joined' answers`);
    const incidentsHere = [...sc.incidentsOfRun.values()].reduce((s, n) => s + n, 0);
    say(
      `  audit: ${audit.anomalies} episodes (≤ ${incidentsHere} incidents on this node's runs), ${audit.joins} joins, .HALT in ${audit.withHalt} runs; ${problems.length ? `PROBLEMS:\n  ${problems.slice(0, 20).join('\n  ')}` : 'consistent'}`,
    );
    if (problems.length) throw new Error(`webhook load (${label}): incorrect outcome: ${problems.slice(0, 5).join('; ')}`);
    return {
      wallS,
      alertsPerS,
      reqPerS,
      p50Ms: p50,
      p99Ms: p99,
      maxMs: max,
      split,
      statuses: t.statuses,
      results: t.results,
      episodes: audit.anomalies,
      joins: audit.joins,
      twCpuS: twCpu,
      clientCpuS: clientCpu,
      rssBytes: mem.rss,
      peakRssBytes: mem.hwm,
    };
  } finally {
    await tw.stop();
  }
}

runMain(NAME, TARGET, async (): Promise<Row> => {
  const tmp = benchTmp('webhook');
  let tw: Tw | undefined;
  try {
    const tokenFile = join(tmp.path, 'token');
    writeFileSync(tokenFile, TOKEN + '\n');
    const sc = scenario(TOTAL_ALERTS, 5);
    const bytes = sc.deliveries.reduce((s, d) => s + d.body.length, 0);
    const requests = sc.deliveries.length;
    say(
      `scenario: ${HOURS} h of a ${NODES}-node fleet (${NODES * RUNS_PER_NODE} runs, ${RUNS_PER_NODE} here), ${sc.incidents} incidents → ${requests} deliveries, ${sc.alerts} alerts (${(sc.alerts / requests).toFixed(1)} per payload, ${(bytes / requests / 1024).toFixed(1)} KiB avg); ${sc.notOurs} alerts for other nodes' runs`,
    );
    // Warm-up (JIT, connections): 300 deliveries for runs of other nodes only, nothing written.
    const warm = scenario(2_000, 99)
      .deliveries.filter((d) => !d.body.includes('"run":"n0-'))
      .slice(0, 300)
      .map((d) => d.body);
    // (1) as fast as 32 in-flight requests go; (2) the same day offered at the target rate
    const m = await mixed(join(tmp.path, 'closed'), tokenFile, sc, warm);
    const paced = await mixed(join(tmp.path, 'paced'), tokenFile, sc, warm, 2000);
    const { alertsPerS, reqPerS, p50Ms: p50, p99Ms: p99, rssBytes } = m;

    // ---------------------------------------------------------------- worst case: every alert a new episode
    const root2 = join(tmp.path, 'worst');
    const wruns = Array.from({ length: WORST_RUNS }, (_, r) => runName(0, r));
    makeRoot(root2, wruns);
    tw = await startAm(root2, tokenFile);
    await load(tw.url, warm, CONCURRENCY);
    const wbodies: Buffer[] = [];
    // kind-major, so the 32 in-flight requests are for 32 different runs (as many as can be)
    for (const [i, kind] of ANOMALY_KINDS.entries()) {
      for (const run of wruns) {
        const labels = {
          alertname: kind.alert,
          anomaly_type: kind.name,
          halt: String(kind.halts),
          instance: 'gpu-node-0:9465',
          job: 'trainwatch',
          rank: '0',
          run,
          severity: kind.severity,
        };
        wbodies.push(
          payload([{ labels, fingerprint: fingerprintOf(labels), startsAt: iso(i), endsAt: '0001-01-01T00:00:00Z', status: 'firing' }], run, kind, 'new'),
        );
      }
    }
    const wc0 = cpuSecondsOf(tw.pid);
    const worst = await load(tw.url, wbodies, CONCURRENCY);
    const wcpu = cpuSecondsOf(tw.pid) - wc0;
    const wt = tally(worst.res);
    const wms = worst.res.map((r) => r.ms);
    const wRate = wbodies.length / worst.wallS;
    const wp50 = median(wms);
    const wp99 = pct(wms, 99);
    const wmem = memOf(tw.pid);
    say(
      `worst case: ${wbodies.length} alerts, each a new episode (1 per payload): ${worst.wallS.toFixed(2)} s = ${wRate.toFixed(0)} alerts/s; p50 ${wp50.toFixed(1)} ms, p99 ${wp99.toFixed(1)} ms, max ${Math.max(...wms).toFixed(1)} ms; trainwatch CPU ${((wcpu / worst.wallS) * 100).toFixed(0)} % of a core; RSS ${(wmem.rss / 1e6).toFixed(0)} MB`,
    );
    say(`worst case statuses ${JSON.stringify(wt.statuses)}; results ${JSON.stringify(wt.results)}`);
    await tw.stop();
    tw = undefined;
    const wproblems: string[] = [];
    if ((wt.results.acted ?? 0) !== wbodies.length) wproblems.push(`${wt.results.acted ?? 0} of ${wbodies.length} acted`);
    const waudit = checkAudit(root2, wruns, new Map(wruns.map((r) => [r, ANOMALY_KINDS.length])));
    wproblems.push(...waudit.problems);
    if (waudit.anomalies !== wbodies.length) wproblems.push(`${waudit.anomalies} episodes in the audit logs for ${wbodies.length} alerts`);
    if (wproblems.length) throw new Error(`worst case: incorrect outcome: ${wproblems.slice(0, 5).join('; ')}`);

    const ok = alertsPerS >= 2000 && p99 < 50;
    return {
      name: NAME,
      figure: `${alertsPerS.toFixed(0)} alerts/s (${reqPerS.toFixed(0)} req/s) at 32 in flight, p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(0)} ms; at 2,000 alerts/s offered p99 ${paced.p99Ms.toFixed(0)} ms; RSS ${(rssBytes / 1e6).toFixed(0)} MB, 0 errors; every alert a new episode: ${wRate.toFixed(0)} alerts/s, p99 ${wp99.toFixed(0)} ms`,
      target: TARGET,
      verdict: ok ? 'met' : 'MISSED',
      data: {
        alerts: sc.alerts,
        requests,
        concurrency: CONCURRENCY,
        closedLoop: m,
        offered2000: paced,
        worst: {
          alerts: wbodies.length,
          wallS: worst.wallS,
          alertsPerS: wRate,
          p50Ms: wp50,
          p99Ms: wp99,
          maxMs: Math.max(...wms),
          twCpuS: wcpu,
          rssBytes: wmem.rss,
        },
      },
    };
  } finally {
    await tw?.stop();
    tmp.cleanup();
  }
});
