// The whole stack, for real: a simulated trainer → trainwatch (mode alertmanager) → Prometheus
// scraping it and evaluating alerts/ → two clustered Alertmanager replicas → trainwatch's webhook
// → .anomaly_type and .HALT → the trainer stops. Both replicas may deliver; trainwatch acts once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, scrape, startSimTrainer, startTrainwatch, tmpDir, waitFor } from '../helpers/proc.js';
import { promQuery, startAlertmanager, startPrometheus, type Service } from '../helpers/stack.js';

const TOKEN = 'e2e-token-0123456789';
const SCRAPE_S = 1;
const EVAL_S = 1;
const GROUP_WAIT_S = 1;
// Long enough that no scheduling gap of a live trainer trips it (which would turn the flatline
// and NaN runs into stalls); the stall run's hang is real.
const STALL_S = 15;

const audit = (dir: string) =>
  existsSync(join(dir, '.trainwatch-audit.jsonl'))
    ? readFileSync(join(dir, '.trainwatch-audit.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>)
    : [];

test('stall, flatline and NaN divergence go through Prometheus and an Alertmanager HA pair to .HALT, acted on once each', { timeout: 180_000 }, async (t) => {
  const d = tmpDir('tw-e2e-');
  t.after(() => d.cleanup());
  const tokenFile = join(d.path, 'token');
  writeFileSync(tokenFile, TOKEN + '\n');
  const runs = { stall: 'heartbeat_stall', flat: 'throughput_flatline', nan: 'nonfinite_loss' } as const;
  const sims = Object.entries(runs).map(([name, fault]) => {
    const dir = join(d.path, 'runs', name);
    // Started from the directory that holds the run (startSimTrainer's default), as the real trainer runs from its checkout.
    const sim = startSimTrainer([
      '--dir',
      dir,
      '--ranks',
      '2',
      '--step-s',
      '0.05',
      '--fault',
      fault === 'nonfinite_loss' ? 'nonfinite_grad' : fault,
      '--fault-at',
      '60',
      '--quiet',
    ]);
    t.after(() => sim.kill());
    return [name, sim] as const;
  });
  const tw = await startTrainwatch(['--root', join(d.path, 'runs'), '--mode', 'alertmanager', '--halt', '1', '--webhook.token-file', tokenFile], {
    NSA_WATCH_HEARTBEAT_STALL_S: String(STALL_S),
    NSA_WATCH_STARTUP_GRACE_S: '30',
    NSA_WATCH_FLATLINE_N: '5',
    NSA_WATCH_ESCALATE_S: '2',
    NSA_WATCH_ESCALATE_TERM_S: '1',
    NSA_WATCH_ESCALATE_KILL_S: '1', // the trainer catches SIGTERM and runs on
    NSA_WATCH_INTERVAL_S: '1',
  });
  t.after(() => tw.stop());
  const amConfig = `
route:
  receiver: "null"
  group_by: [alertname, run]
  group_wait: ${GROUP_WAIT_S}s
  group_interval: 2s
  repeat_interval: 1h
  routes:
    - receiver: trainwatch
      matchers: ['anomaly_type=~".+"']
receivers:
  - name: "null"
  - name: trainwatch
    webhook_configs:
      - url: ${tw.url}/webhook/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: ${tokenFile}
`;
  // A 1 ms peer timeout makes the second replica send before it hears that the first did:
  // the at-least-once delivery that trainwatch must absorb.
  const am1 = await startAlertmanager(amConfig, { peerTimeout: '1ms' });
  t.after(() => am1.stop());
  const am2 = await startAlertmanager(amConfig, { peers: [am1.clusterAddress], peerTimeout: '1ms' });
  t.after(() => am2.stop());
  await waitFor(async () => {
    const s = (await (await fetch(`${am2.url}/api/v2/status`)).json()) as { cluster: { peers: unknown[] } };
    return s.cluster.peers.length === 2;
  }, 'the two Alertmanagers to form a cluster');
  const prom: Service = await startPrometheus(`
global: { scrape_interval: ${SCRAPE_S}s, evaluation_interval: ${EVAL_S}s }
rule_files: [${join(REPO, 'alerts/trainwatch.rules.yml')}]
alerting:
  alertmanagers:
    - static_configs: [{ targets: ['${new URL(am1.url).host}', '${new URL(am2.url).host}'] }]
scrape_configs:
  - job_name: trainwatch
    static_configs: [{ targets: ['127.0.0.1:${tw.port}'] }]
`);
  t.after(() => prom.stop());

  for (const [name, kind] of Object.entries(runs)) {
    const dir = join(d.path, 'runs', name);
    await waitFor(() => existsSync(join(dir, '.HALT')), `.HALT in ${name}`, 90_000, 50);
    assert.equal(`${kind}\n`, readFileSync(join(dir, '.anomaly_type'), 'utf8'), name);
    assert.equal(`halt: ${kind}\n`, readFileSync(join(dir, '.HALT'), 'utf8'), name);
  }
  for (const [name, sim] of sims) assert.notEqual(null, await sim.exited, `${name} trainer stopped`);
  // Prometheus sent to both replicas (the halted runs' alerts resolve once their trainers
  // stopped, so the replicas' alert lists may already be empty); each run has one episode.
  const promMetrics = await (await fetch(`${prom.url}/metrics`)).text();
  const sentTo = (u: string) =>
    Number(
      new RegExp(`^prometheus_notifications_sent_total\\{alertmanager="http://${new URL(u).host}/api/v2/alerts"\\} (\\S+)$`, 'm').exec(promMetrics)?.[1] ?? 0,
    );
  assert.deepEqual(
    [true, true],
    [am1.url, am2.url].map((u) => sentTo(u) > 0),
    'Prometheus sent alerts to both replicas',
  );
  for (const name of Object.keys(runs)) {
    const dir = join(d.path, 'runs', name);
    const episodes = audit(dir).filter((e) => e.event === 'anomaly');
    assert.equal(1, episodes.length, `${name}: ${JSON.stringify(episodes)}`);
    assert.equal('alertmanager', episodes[0].source);
  }
  // The hung trainer never read .HALT: escalation stopped it, and said so.
  const escalation = audit(join(d.path, 'runs', 'stall')).filter((e) => e.signal);
  assert.deepEqual(['SIGKILL', 'SIGTERM', 'SIGUSR1'], [...new Set(escalation.filter((e) => e.result === 'sent').map((e) => e.signal))].sort());
  // The exits are audited when trainwatch next looks at the processes (its next sweep).
  await waitFor(
    () => audit(join(d.path, 'runs', 'stall')).filter((e) => e.signal && e.result === 'exited').length === 2,
    'both ranks audited as exited',
    30_000,
    100,
  );

  // Latency for the stall, threshold crossing → .HALT on disk: reported, not asserted (a loaded
  // machine delays any of the four processes; bench/ and docs/alerts.md have the figure).
  const stallDir = join(d.path, 'runs', 'stall');
  const lastBeat = Math.max(
    ...[0, 1].map((r) => {
      const lines = readFileSync(join(stallDir, `heartbeat_rank${r}.jsonl`), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l.replace(/\bNaN\b/g, 'null')) as { ts: number; msg: string });
      return Math.min(
        ...lines
          .filter((x) => x.msg !== 'watchdog_dump')
          .slice(-1)
          .map((x) => x.ts),
      );
    }),
  );
  const haltAt = statSync(join(stallDir, '.HALT')).mtimeMs / 1000;
  const latency = haltAt - (lastBeat + STALL_S);
  t.diagnostic(`stall threshold → .HALT on disk: ${latency.toFixed(2)} s (scrape ${SCRAPE_S} s + eval ${EVAL_S} s + group_wait ${GROUP_WAIT_S} s)`);
  const m = await scrape(tw.url);
  t.diagnostic(
    `webhook alerts: acted ${m.get('trainwatch_webhook_alerts_total{result="acted"}')}, duplicate ${m.get('trainwatch_webhook_alerts_total{result="duplicate"}') ?? 0}`,
  );
  assert.equal(3, m.get('trainwatch_webhook_alerts_total{result="acted"}'));
  // Every trainer stopped: each run is halted, and the state-aware rules go silent for it.
  await waitFor(
    async () => (await promQuery(prom.url, 'trainwatch_run_state{state="halted"} == 1')).length === 3,
    'three halted runs in Prometheus',
    60_000,
    200,
  );
  await waitFor(
    async () => (await promQuery(prom.url, 'ALERTS{alertstate="firing", run=~".+"}')).length === 0,
    'no alert firing for a halted run',
    60_000,
    200,
  );
});
