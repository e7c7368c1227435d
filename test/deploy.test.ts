// deploy/: the Prometheus and Alertmanager configs of both variants, Compose (deploy/compose/) and
// plain host (deploy/host/): promtool and amtool on every file, a real Prometheus → Alertmanager →
// trainwatch chain running the plain-host files with only their ports changed, and the Compose
// files differing from those only in hosts and paths; the snippets and latency figures the docs
// give; the Compose stack's wiring; and the Kubernetes manifests, including the generated
// PrometheusRule.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { request as httpsRequest } from 'node:https';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, posix, resolve } from 'node:path';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { defaultConfig } from '../src/config/settings.js';
import { WEBHOOK_PATH } from '../src/http/server.js';
import { REPO, freePort, requireBinary, startSimTrainer, startTrainwatch, teardown, tmpDir, waitFor } from './helpers/proc.js';
import { promQuery, startAlertmanager, startPrometheus } from './helpers/stack.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
type Y = any;

const DEPLOY = join(REPO, 'deploy');
const COMPOSE = join(DEPLOY, 'compose');
const HOST = join(DEPLOY, 'host');
const K8S = join(DEPLOY, 'kubernetes');
const VARIANTS = { compose: COMPOSE, host: HOST } as const;
const DEFAULTS = defaultConfig();
const DEFAULT_PORT = Number(/:(\d+)$/.exec(DEFAULTS['web.listen-address'])![1]);
const yamlFile = (p: string): Y => parseYaml(readFileSync(p, 'utf8'));
const prom: Y = yamlFile(join(COMPOSE, 'prometheus.yml'));
const am: Y = yamlFile(join(COMPOSE, 'alertmanager.yml'));
const compose: Y = yamlFile(join(COMPOSE, 'compose.yaml'));
const trainwatchJob = (p: Y = prom) => (p.scrape_configs as Y[]).find((j) => j.job_name === 'trainwatch');
const trainwatchReceiver = (a: Y = am) => (a.receivers as Y[]).find((r) => r.name === 'trainwatch');
const trainwatchRoute = (a: Y) => (a.route.routes as Y[]).find((x) => x.receiver === 'trainwatch');
/** host:port → [host, port]. */
const hostPort = (s: string): [string, number] => {
  const cut = s.lastIndexOf(':');
  return [s.slice(0, cut), Number(s.slice(cut + 1))];
};
/** The repository's rule files, alerts/*.rules.yml. */
const repoRules = () =>
  readdirSync(join(REPO, 'alerts'))
    .filter((n) => n.endsWith('.rules.yml'))
    .sort()
    .map((n) => join(REPO, 'alerts', n));
/** The rule files a prometheus.yml's rule_files globs (`dir/*.rules.yml`) match, resolved against `base`. */
const ruleFilesOf = (cfg: Y, base: string): string[] =>
  (cfg.rule_files as string[]).flatMap((g) => {
    const abs = resolve(base, g);
    const re = new RegExp(
      '^' +
        posix
          .basename(abs)
          .replace(/[.+^${}()|[\]\\]/g, '\\$&')
          .replace(/\*/g, '[^/]*') +
        '$',
    );
    return existsSync(dirname(abs))
      ? readdirSync(dirname(abs))
          .filter((n) => re.test(n))
          .map((n) => join(dirname(abs), n))
      : [];
  });
/**
 * The plain-host install that docs/deploy.md describes, in a directory standing in for
 * /etc/prometheus: the rules copied beside prometheus.yml, where its relative rule_files point.
 */
const hostRuleFiles = (): Record<string, string> => Object.fromEntries(repoRules().map((f) => [basename(f), readFileSync(f, 'utf8')] as const));
/**
 * The one change the tests make to a shipped plain-host file: each `localhost:<default port>`
 * becomes `localhost:<free port>`. Every default named must occur, so a changed file fails here.
 */
function withPorts(text: string, ports: Record<number, number>): string {
  let out = text;
  for (const [from, to] of Object.entries(ports)) {
    assert.ok(out.includes(`localhost:${from}`), `the shipped file no longer names localhost:${from}`);
    out = out.replaceAll(`localhost:${from}`, `localhost:${to}`);
  }
  return out;
}
/** $ARGS of a shipped /etc/default file, split as systemd splits `ExecStart=… $ARGS`. */
function defaultArgs(file: string): string[] {
  const r = spawnSync('sh', ['-c', '. "$0" && printf "%s\\n" $ARGS', file], { encoding: 'utf8' });
  assert.equal(0, r.status, r.stderr);
  return r.stdout.split('\n').filter((a) => a !== '');
}

// ---------------------------------------------------------------- Prometheus and Alertmanager

for (const [variant, dir] of Object.entries(VARIANTS)) {
  test(`deploy/${variant}/prometheus.yml: promtool check config passes and loads every alerts/*.rules.yml`, () => {
    const promtool = requireBinary('promtool', 'prometheus');
    const cfg = yamlFile(join(dir, 'prometheus.yml'));
    // Compose's relative rule_files reach the repository's alerts/; the plain-host file is checked
    // where docs/deploy.md installs it, beside a copy of the rules.
    const t = tmpDir('tw-promcheck-');
    try {
      let where = dir;
      if (variant === 'host') {
        where = t.path;
        copyFileSync(join(dir, 'prometheus.yml'), join(where, 'prometheus.yml'));
        for (const [name, text] of Object.entries(hostRuleFiles())) writeFileSync(join(where, name), text);
      }
      const rules = ruleFilesOf(cfg, where);
      assert.deepEqual(
        repoRules().map((f) => basename(f)),
        rules.map((f) => basename(f)).sort(),
        'rule_files must load every alerts/*.rules.yml',
      );
      // Relative rule_files resolve against the config's directory, so it is checked where it lies.
      const r = spawnSync(promtool, ['check', 'config', 'prometheus.yml'], { cwd: where, encoding: 'utf8' });
      assert.equal(0, r.status, `promtool check config deploy/${variant}/prometheus.yml:\n${r.stdout}${r.stderr}`);
      for (const f of rules)
        assert.match(r.stdout, new RegExp(`Checking \\S*${posix.basename(f).replace(/\./g, '\\.')}\\s+SUCCESS`), `promtool did not check ${f}:\n${r.stdout}`);
    } finally {
      t.cleanup();
    }
    const job = trainwatchJob(cfg);
    assert.ok(job, 'a scrape job named trainwatch');
    assert.match(job.job_name, /trainwatch/, 'TrainwatchDown matches up{job=~".*trainwatch.*"}');
    assert.equal(DEFAULTS['web.telemetry-path'], job.metrics_path ?? '/metrics');
    for (const t of job.static_configs.flatMap((s: Y) => s.targets))
      assert.equal(DEFAULT_PORT, hostPort(t)[1], `target ${t} must use trainwatch's default port`);
    assert.ok(cfg.alerting?.alertmanagers?.length > 0, 'alerting must send to an Alertmanager');
  });

  test(`deploy/${variant}/alertmanager.yml: amtool check-config passes; a route sends alerts with anomaly_type to a 0.25 webhook with a bearer credentials_file`, () => {
    const amtool = requireBinary('amtool', 'prometheus-alertmanager');
    const r = spawnSync(amtool, ['check-config', join(dir, 'alertmanager.yml')], { encoding: 'utf8' });
    assert.equal(0, r.status, `amtool check-config deploy/${variant}/alertmanager.yml:\n${r.stdout}${r.stderr}`);
    const cfg = yamlFile(join(dir, 'alertmanager.yml'));
    const recv = trainwatchReceiver(cfg);
    assert.ok(recv, 'a receiver named trainwatch');
    assert.equal(1, recv.webhook_configs?.length, 'one webhook per trainwatch; the example has one');
    const wh = recv.webhook_configs[0];
    // Alertmanager 0.25's webhook_config knows only these keys (no url_file, no timeout).
    assert.deepEqual(
      [],
      Object.keys(wh).filter((k) => !['url', 'send_resolved', 'http_config', 'max_alerts'].includes(k)),
    );
    assert.equal(true, wh.send_resolved);
    const url = new URL(wh.url);
    assert.equal(WEBHOOK_PATH, url.pathname);
    assert.equal(DEFAULT_PORT, Number(url.port));
    assert.equal('Bearer', wh.http_config.authorization.type ?? 'Bearer');
    assert.equal('string', typeof wh.http_config.authorization.credentials_file);
    assert.equal(undefined, wh.http_config.authorization.credentials, 'the token must come from a file, not the config');
    const route = trainwatchRoute(cfg);
    assert.ok(route, 'a route to the trainwatch receiver');
    assert.deepEqual(['anomaly_type=~".+"'], route.matchers, 'only alerts trainwatch can act on (they carry anomaly_type)');
    assert.equal(true, route.continue, 'people must still be notified: continue: true');
    assert.ok(
      (cfg.receivers as Y[]).some((x) => x.name === cfg.route.receiver && !x.webhook_configs),
      'the default receiver is the null example',
    );
  });
}

test('deploy/compose/ and deploy/host/ differ only in hosts and file paths: the same job, rules, intervals, route and receiver', () => {
  const strip = {
    prometheus: (c: Y) => {
      const x = structuredClone(c);
      delete x.rule_files;
      x.alerting.alertmanagers[0].static_configs[0].targets = [];
      trainwatchJob(x).static_configs[0].targets = [];
      return x;
    },
    alertmanager: (c: Y) => {
      const x = structuredClone(c);
      const wh = trainwatchReceiver(x).webhook_configs[0];
      wh.url = new URL(wh.url).pathname;
      delete wh.http_config.authorization.credentials_file;
      return x;
    },
  };
  for (const [name, f] of Object.entries(strip))
    assert.deepEqual(f(yamlFile(join(COMPOSE, `${name}.yml`))), f(yamlFile(join(HOST, `${name}.yml`))), `${name}.yml`);
  // Hosts: Compose's service names, the plain host's localhost.
  const hosts = (dir: string) => {
    const p = yamlFile(join(dir, 'prometheus.yml'));
    return [
      ...trainwatchJob(p).static_configs[0].targets.map((t: string) => hostPort(t)[0]),
      ...p.alerting.alertmanagers[0].static_configs[0].targets.map((t: string) => hostPort(t)[0]),
      new URL(trainwatchReceiver(yamlFile(join(dir, 'alertmanager.yml'))).webhook_configs[0].url).hostname,
    ];
  };
  assert.deepEqual(['trainwatch', 'alertmanager', 'trainwatch'], hosts(COMPOSE));
  assert.deepEqual(['localhost', 'localhost', 'localhost'], hosts(HOST));
  // Plain host: paths relative to /etc/prometheus, where Debian's packages read their configs.
  assert.deepEqual(['trainwatch.rules.yml'], yamlFile(join(HOST, 'prometheus.yml')).rule_files);
  const cred = trainwatchReceiver(yamlFile(join(HOST, 'alertmanager.yml'))).webhook_configs[0].http_config.authorization.credentials_file;
  assert.equal(false, cred.startsWith('/'), 'the plain-host token path is relative to the config file');
});

test(
  'deploy/host end to end: real Prometheus and Alertmanager run the shipped plain-host files (only ports changed), a simulated NaN gradient becomes .HALT through the webhook, and the alert runbook_url opens its runbook section',
  { timeout: 240_000 },
  async (t) => {
    const later = teardown(t);
    const d = tmpDir('tw-deploy-host-');
    later(() => d.cleanup());
    const runs = join(d.path, 'runs');
    const runDir = join(runs, 'run-nan');
    mkdirSync(runs);
    // trainwatch as docs/deploy.md starts it next to a plain-host Alertmanager.
    const token = `host-e2e-token-${process.pid}\n`;
    const twToken = join(d.path, 'webhook.token');
    writeFileSync(twToken, token);
    const tw = await startTrainwatch(['--root', runs, '--mode', 'alertmanager', '--webhook.token-file', twToken, '--halt', '1']);
    later(() => tw.stop());

    // Alertmanager: the shipped file with trainwatch's free port, the token file beside it (as in
    // /etc/prometheus), and the ARGS of the shipped /etc/default/prometheus-alertmanager.
    const amShipped = yamlFile(join(HOST, 'alertmanager.yml'));
    const tokenName = trainwatchReceiver(amShipped).webhook_configs[0].http_config.authorization.credentials_file as string;
    const args = defaultArgs(join(HOST, 'prometheus-alertmanager.default'));
    const amSvc = await startAlertmanager(withPorts(readFileSync(join(HOST, 'alertmanager.yml'), 'utf8'), { [DEFAULT_PORT]: tw.port }), {
      extraFiles: { [tokenName]: token },
      args,
    });
    later(() => amSvc.stop());
    const amStatus = await (await fetch(`${amSvc.url}/api/v2/status`)).json();
    assert.equal('disabled', amStatus.cluster.status, `the shipped ARGS (${args.join(' ')}) must turn the cluster port off`);

    // Prometheus: the shipped file with Alertmanager's and trainwatch's free ports, the rules beside it.
    const promText = withPorts(readFileSync(join(HOST, 'prometheus.yml'), 'utf8'), { 9093: amSvc.port, [DEFAULT_PORT]: tw.port });
    const promSvc = await startPrometheus(promText, hostRuleFiles());
    later(() => promSvc.stop());
    const rules = await (await fetch(`${promSvc.url}/api/v1/rules`)).json();
    assert.deepEqual(
      repoRules()
        .flatMap((f) => (yamlFile(f).groups as Y[]).map((g) => g.name))
        .sort(),
      rules.data.groups.map((g: Y) => g.name).sort(),
    );

    // The trainer's grad_norm turns NaN and training goes on: only trainwatch's .HALT stops it.
    const sim = startSimTrainer(['--dir', runDir, '--ranks', '2', '--step-s', '0.1', '--fault', 'nonfinite_grad', '--fault-at', '20', '--quiet']);
    later(() => sim.kill());
    const diag = () =>
      `\n--- trainwatch ---\n${tw.logs().slice(-3000)}\n--- alertmanager ---\n${amSvc.logs().slice(-2000)}\n--- prometheus ---\n${promSvc.logs().slice(-2000)}\n--- trainer ---\n${sim.output().slice(-1000)}`;
    // The alert as Prometheus holds it while it fires (it resolves once the halted run is scraped).
    const firing = await waitFor(
      async () => {
        const body = await (await fetch(`${promSvc.url}/api/v1/alerts`)).json();
        return (body.data.alerts as Y[]).find((a) => a.labels.alertname === 'TrainingLossNotFinite' && a.state === 'firing');
      },
      'Prometheus to fire TrainingLossNotFinite (15 s scrape and evaluation intervals, as shipped)',
      120_000,
      200,
    ).catch((e: Error) => assert.fail(e.message + diag()));
    await waitFor(() => existsSync(join(runDir, '.HALT')), 'Alertmanager to deliver the alert and trainwatch to write .HALT', 60_000, 100).catch((e: Error) =>
      assert.fail(e.message + diag()),
    );
    assert.equal('nonfinite_loss\n', readFileSync(join(runDir, '.anomaly_type'), 'utf8'));
    assert.equal('halt: nonfinite_loss\n', readFileSync(join(runDir, '.HALT'), 'utf8'));
    const episodes = readFileSync(join(runDir, '.trainwatch-audit.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .filter((e) => e.event === 'anomaly');
    assert.deepEqual(['alertmanager'], [...new Set(episodes.map((e) => e.source))], 'the webhook acted, not the embedded detector');
    assert.equal(0, await sim.exited, 'the trainer stops at .HALT');

    // The runbook link of the alert Prometheus raised opens its section on that trainwatch.
    const runbook = firing.annotations.runbook_url as string;
    assert.equal(`http://localhost:${tw.port}/docs/runbook#traininglossnotfinite`, runbook);
    const page = await fetch(runbook);
    assert.equal(200, page.status);
    assert.match(await page.text(), /<h2 id="traininglossnotfinite">/);
  },
);

// ---------------------------------------------------------------- Compose

/** `${VAR:-default}` → default (what `docker compose` uses when VAR is unset). */
const interpolate = (s: string) => s.replace(/\$\{(\w+)(?::?-([^}]*))?\}/g, (_m, _v, def: string | undefined) => def ?? '');
/** Short-syntax volume "src:dst[:mode]" → {src, dst}. */
const volumeOf = (v: string) => {
  const [src, dst] = interpolate(v).split(':');
  return { raw: v, src: src, dst: dst, bind: /^[./~]/.test(interpolate(v)) };
};
const flag = (args: string[], name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);

test('deploy/compose/compose.yaml: parses, every local file it mounts exists, and services, ports and paths agree with the configs', () => {
  const s = compose.services;
  assert.deepEqual(['alertmanager', 'grafana', 'prometheus', 'trainwatch'], Object.keys(s).sort());
  // trainwatch is built from this repository.
  assert.ok(existsSync(join(COMPOSE, s.trainwatch.build.context, s.trainwatch.build.dockerfile ?? 'Dockerfile')), 'build context must hold the Dockerfile');
  // Every bind-mounted file or directory exists (the runs directory is the user's).
  for (const [name, svc] of Object.entries<Y>(s))
    for (const v of (svc.volumes ?? []).map(volumeOf)) {
      if (!v.bind) {
        assert.ok(compose.volumes && v.src in compose.volumes, `${name}: named volume ${v.src} is not declared`);
        continue;
      }
      if (v.dst === '/runs') continue;
      if (v.src.startsWith('../../grafana') && !existsSync(join(REPO, 'grafana'))) continue;
      assert.ok(existsSync(resolve(COMPOSE, v.src)), `${name}: ${v.raw} mounts ${resolve(COMPOSE, v.src)}, which does not exist`);
    }
  for (const [name, sec] of Object.entries<Y>(compose.secrets ?? {}))
    assert.ok(existsSync(resolve(COMPOSE, interpolate(sec.file))), `secret ${name}: ${sec.file} does not exist`);
  const mountOf = (svc: Y, dst: string) => (svc.volumes as string[]).map(volumeOf).find((v) => v.dst === dst);
  const published = (svc: Y) => (svc.ports as string[]).map((p) => Number(p.split(':').at(-1)));

  // trainwatch: default port, /runs, the webhook token from the shared secret.
  const twArgs: string[] = s.trainwatch.command;
  assert.deepEqual([DEFAULT_PORT], published(s.trainwatch));
  assert.equal('/runs', flag(twArgs, 'root'));
  assert.equal('/runs', mountOf(s.trainwatch, '/runs')?.dst, 'the runs directory must be mounted at /runs');
  const tokenPath = flag(twArgs, 'webhook.token-file');
  assert.equal(`/run/secrets/${s.trainwatch.secrets[0]}`, tokenPath);

  // Prometheus: the deploy/compose/prometheus.yml the tests check, and its rule_files land on ../../alerts.
  const promArgs: string[] = s.prometheus.command;
  const promConfig = flag(promArgs, 'config.file')!;
  assert.equal('./prometheus.yml', mountOf(s.prometheus, promConfig)?.src);
  for (const g of prom.rule_files as string[]) {
    const inContainer = posix.resolve(posix.dirname(promConfig), posix.dirname(g));
    assert.equal('../../alerts', mountOf(s.prometheus, inContainer)?.src, `rule_files ${g} resolves to ${inContainer}, which must be the alerts/ mount`);
  }
  const promPort = hostPort(flag(promArgs, 'web.listen-address')!)[1];
  assert.deepEqual([promPort], published(s.prometheus));
  for (const t of trainwatchJob().static_configs.flatMap((c: Y) => c.targets)) assert.deepEqual(['trainwatch', DEFAULT_PORT], hostPort(t));

  // Alertmanager: deploy/compose/alertmanager.yml, one replica without a cluster port; Prometheus
  // sends to it; it posts to trainwatch with the shared token.
  const amArgs: string[] = s.alertmanager.command;
  assert.equal('./alertmanager.yml', mountOf(s.alertmanager, flag(amArgs, 'config.file')!)?.src);
  assert.equal('', flag(amArgs, 'cluster.listen-address'), 'a single Alertmanager needs no cluster port (0.0.0.0:9094 otherwise)');
  const amPort = hostPort(flag(amArgs, 'web.listen-address')!)[1];
  assert.deepEqual([amPort], published(s.alertmanager));
  assert.deepEqual([['alertmanager', amPort]], prom.alerting.alertmanagers[0].static_configs[0].targets.map(hostPort));
  const wh = trainwatchReceiver().webhook_configs[0];
  assert.equal(`trainwatch:${DEFAULT_PORT}`, new URL(wh.url).host);
  assert.deepEqual(s.trainwatch.secrets, s.alertmanager.secrets);
  assert.equal(tokenPath, wh.http_config.authorization.credentials_file);

  // Grafana: provisioning from grafana/, its datasource reaches this Prometheus, its dashboard
  // provider reads the directory the dashboard JSON is mounted into.
  if (existsSync(join(REPO, 'grafana'))) {
    assert.equal('../../grafana/provisioning', mountOf(s.grafana, '/etc/grafana/provisioning')?.src);
    const ds = (yamlFile(join(REPO, 'grafana/provisioning/datasources/prometheus.yml')).datasources as Y[]).find((d) => d.type === 'prometheus');
    const dsUrl = new URL(ds.url);
    assert.deepEqual(['prometheus', promPort], [dsUrl.hostname, Number(dsUrl.port)]);
    assert.equal(
      prom.global.scrape_interval,
      ds.jsonData?.timeInterval,
      "the datasource's timeInterval must equal Prometheus' scrape_interval ($__rate_interval)",
    );
    const provider = (yamlFile(join(REPO, 'grafana/provisioning/dashboards/trainwatch.yml')).providers as Y[])[0];
    const dash = (s.grafana.volumes as string[]).map(volumeOf).find((v) => v.src === '../../grafana/trainwatch-dashboard.json');
    assert.ok(dash, 'the dashboard JSON must be mounted');
    assert.equal(provider.options.path, posix.dirname(dash.dst));
  }
});

// ---------------------------------------------------------------- Kubernetes

interface Doc {
  file: string;
  obj: Y;
}
function k8sDocs(): Doc[] {
  const out: Doc[] = [];
  for (const n of readdirSync(K8S).sort()) {
    if (!/\.ya?ml$/.test(n) || n === 'kustomization.yaml') continue;
    for (const d of parseAllDocuments(readFileSync(join(K8S, n), 'utf8'))) {
      assert.deepEqual([], d.errors.map(String), `${n} does not parse`);
      const obj = d.toJS();
      if (obj !== null) out.push({ file: n, obj });
    }
  }
  return out;
}
const one = (docs: Doc[], kind: string): Y => {
  const found = docs.filter((d) => d.obj.kind === kind);
  assert.equal(1, found.length, `exactly one ${kind} under deploy/kubernetes`);
  return found[0].obj;
};
const subset = (small: Record<string, string>, big: Record<string, string>) => Object.entries(small).every(([k, v]) => big?.[k] === v);

test('deploy/kubernetes: DaemonSet, Service, ServiceMonitor and PrometheusRule are well-formed and select each other', () => {
  const docs = k8sDocs();
  for (const { file, obj } of docs) {
    assert.equal('string', typeof obj.apiVersion, `${file}: apiVersion`);
    assert.equal('string', typeof obj.kind, `${file}: kind`);
    assert.equal('string', typeof obj.metadata?.name, `${file}: metadata.name`);
  }
  assert.deepEqual(['DaemonSet', 'PrometheusRule', 'Service', 'ServiceMonitor'], docs.map((d) => d.obj.kind).sort());

  const ds = one(docs, 'DaemonSet');
  assert.equal('apps/v1', ds.apiVersion);
  const podLabels = ds.spec.template.metadata.labels;
  assert.ok(Object.keys(ds.spec.selector.matchLabels ?? {}).length > 0, 'DaemonSet needs spec.selector.matchLabels');
  assert.equal(true, subset(ds.spec.selector.matchLabels, podLabels), 'DaemonSet selector must match its template labels');
  const pod = ds.spec.template.spec;
  assert.equal(1, pod.containers.length);
  const c = pod.containers[0];
  assert.equal('string', typeof c.image);
  assert.equal('string', typeof c.name);
  const metricsPort = (c.ports as Y[]).find((p) => p.name === 'metrics');
  assert.equal(DEFAULT_PORT, metricsPort?.containerPort);
  const listen = (c.args as string[]).find((a) => a.startsWith('--web.listen-address='));
  if (listen) assert.equal(DEFAULT_PORT, hostPort(listen.split('=')[1])[1]);
  assert.deepEqual({ path: '/readyz', port: 'metrics' }, c.readinessProbe.httpGet);
  assert.deepEqual({ path: '/healthz', port: 'metrics' }, c.livenessProbe.httpGet);
  assert.ok(c.resources?.requests?.cpu && c.resources?.requests?.memory && c.resources?.limits?.memory, 'resources: cpu/memory requests and a memory limit');
  // The runs: a writable hostPath mounted where --root points.
  const root = (c.args as string[]).find((a) => a.startsWith('--root='))?.split('=')[1];
  const mount = (c.volumeMounts as Y[]).find((m) => m.mountPath === root);
  assert.ok(mount, `--root=${root} must be a volumeMount`);
  assert.notEqual(true, mount.readOnly, 'the runs mount must be writable (.anomaly_type, .HALT)');
  const vol = (pod.volumes as Y[]).find((v) => v.name === mount.name);
  assert.equal('string', typeof vol?.hostPath?.path, 'the runs volume must be a hostPath (one trainwatch per node)');
  // Least privilege.
  assert.equal(true, pod.securityContext.runAsNonRoot);
  assert.notEqual(0, pod.securityContext.runAsUser);
  assert.equal(false, c.securityContext.allowPrivilegeEscalation);
  assert.equal(true, c.securityContext.readOnlyRootFilesystem);
  assert.deepEqual(['ALL'], c.securityContext.capabilities.drop);

  const svc = one(docs, 'Service');
  assert.equal('v1', svc.apiVersion);
  assert.equal(true, subset(svc.spec.selector, podLabels), 'Service selector must match the pod labels');
  const svcPort = (svc.spec.ports as Y[]).find((p) => p.name === 'metrics');
  assert.ok(svcPort, 'Service port named metrics');
  assert.ok(svcPort.targetPort === 'metrics' || svcPort.targetPort === DEFAULT_PORT, 'Service targetPort must reach the container port');

  const sm = one(docs, 'ServiceMonitor');
  assert.equal('monitoring.coreos.com/v1', sm.apiVersion);
  assert.equal(true, subset(sm.spec.selector.matchLabels, svc.metadata.labels), 'ServiceMonitor selector must match the Service labels');
  for (const e of sm.spec.endpoints as Y[]) {
    assert.equal('metrics', e.port, 'ServiceMonitor endpoint port must be the Service port name');
    assert.equal(DEFAULTS['web.telemetry-path'], e.path ?? '/metrics');
  }
  // The rules expect job="…trainwatch…": prometheus-operator sets job to the Service name.
  assert.match(sm.spec.jobLabel ? svc.metadata.labels[sm.spec.jobLabel] : svc.metadata.name, /trainwatch/);

  const pr = one(docs, 'PrometheusRule');
  assert.equal('monitoring.coreos.com/v1', pr.apiVersion);
  assert.ok(Array.isArray(pr.spec.groups) && pr.spec.groups.length > 0, 'PrometheusRule spec.groups');
  // kube-prometheus-stack selects on release: the raw files and the kustomization agree.
  const kust = yamlFile(join(K8S, 'kustomization.yaml'));
  const release = kust.labels.find((l: Y) => l.pairs?.release).pairs.release;
  assert.equal(release, sm.metadata.labels.release);
  assert.equal(release, pr.metadata.labels.release);
});

test('deploy/kubernetes/kustomization.yaml: lists every manifest, sets the release label without touching selectors, and its patches hit the runs hostPath', () => {
  const kust = yamlFile(join(K8S, 'kustomization.yaml'));
  assert.equal('Kustomization', kust.kind);
  const manifests = readdirSync(K8S)
    .filter((n) => /\.ya?ml$/.test(n) && n !== 'kustomization.yaml')
    .sort();
  assert.deepEqual(manifests, [...kust.resources].sort());
  const rel = (kust.labels as Y[]).find((l) => l.pairs?.release);
  assert.ok(rel, 'a labels entry setting release (kube-prometheus-stack selects on it)');
  assert.equal(false, rel.includeSelectors, 'selectors are immutable: the release label must not go into them');
  const docs = k8sDocs();
  const ds = one(docs, 'DaemonSet');
  const images = (ds.spec.template.spec.containers as Y[]).map((c) => String(c.image).replace(/:[^/:]+$/, ''));
  for (const img of kust.images ?? []) assert.ok(images.includes(img.name), `images: ${img.name} is no container image (${images.join(', ')})`);
  for (const p of kust.patches ?? []) {
    const target = docs.find((d) => d.obj.kind === p.target.kind && d.obj.metadata.name === p.target.name);
    assert.ok(target, `patch target ${p.target.kind}/${p.target.name} does not exist`);
    for (const op of parseYaml(p.patch) as Y[]) {
      assert.equal('replace', op.op, 'only replace ops are checked here');
      const segs = (op.path as string).split('/').slice(1);
      let node: Y = target.obj;
      for (const s of segs.slice(0, -1)) node = node?.[s];
      assert.ok(node && segs.at(-1)! in node, `patch path ${op.path} does not exist in ${p.target.kind}/${p.target.name}`);
      if ((op.path as string).includes('/volumes/'))
        assert.equal('runs', ds.spec.template.spec.volumes[Number(segs[4])].name, `${op.path} must be the runs volume`);
    }
  }
});

test('deploy/kubernetes/prometheusrule.yaml: equals what scripts/gen-prometheusrule.mjs generates from alerts/, and its groups pass promtool check rules', () => {
  const env = { ...process.env };
  delete env.TRAINWATCH_PROMETHEUSRULE_LABELS;
  const r = spawnSync(process.execPath, [join(REPO, 'scripts/gen-prometheusrule.mjs'), '--stdout'], { encoding: 'utf8', env });
  assert.equal(0, r.status, r.stderr);
  assert.equal(
    r.stdout,
    readFileSync(join(K8S, 'prometheusrule.yaml'), 'utf8'),
    'deploy/kubernetes/prometheusrule.yaml is out of date. Fix: node scripts/gen-prometheusrule.mjs',
  );
  const pr = parseYaml(r.stdout);
  const fromAlerts = readdirSync(join(REPO, 'alerts'))
    .filter((n) => n.endsWith('.rules.yml'))
    .sort()
    .flatMap((n) => yamlFile(join(REPO, 'alerts', n)).groups);
  assert.deepEqual(fromAlerts, pr.spec.groups);
  const promtool = requireBinary('promtool', 'prometheus');
  const t = tmpDir('tw-prule-');
  try {
    const f = join(t.path, 'spec.rules.yml');
    writeFileSync(f, JSON.stringify({ groups: pr.spec.groups }));
    const c = spawnSync(promtool, ['check', 'rules', f], { encoding: 'utf8' });
    assert.equal(0, c.status, `promtool check rules on the PrometheusRule's groups:\n${c.stdout}${c.stderr}`);
  } finally {
    t.cleanup();
  }
});

test('scripts/gen-prometheusrule.mjs: --labels sets the extra labels, --check reports drift, a non-rule file is an error', () => {
  const gen = join(REPO, 'scripts/gen-prometheusrule.mjs');
  const t = tmpDir('tw-gen-');
  try {
    const alerts = join(t.path, 'alerts');
    mkdirSync(alerts);
    writeFileSync(join(alerts, 'a.rules.yml'), 'groups:\n  - name: g1\n    rules:\n      - alert: A\n        expr: vector(1)\n');
    const out = join(t.path, 'pr.yaml');
    const run = (...args: string[]) => spawnSync(process.execPath, [gen, '--alerts', alerts, '--out', out, ...args], { encoding: 'utf8' });
    let r = run('--labels', 'release=prom,team=ml');
    assert.equal(0, r.status, r.stderr);
    const pr = yamlFile(out);
    assert.deepEqual(
      { 'app.kubernetes.io/name': 'trainwatch', 'app.kubernetes.io/component': 'alerting-rules', release: 'prom', team: 'ml' },
      pr.metadata.labels,
    );
    assert.deepEqual([{ name: 'g1', rules: [{ alert: 'A', expr: 'vector(1)' }] }], pr.spec.groups);
    assert.equal(0, run('--labels', 'release=prom,team=ml', '--check').status, 'an up-to-date file passes --check');
    r = run('--check');
    assert.equal(1, r.status, 'the default labels differ from the file: --check must fail');
    assert.match(r.stderr, /out of date.*Fix: node scripts\/gen-prometheusrule\.mjs/s);
    assert.equal(2, run('--labels', 'bad label=x').status, 'an invalid label name is an error');
    writeFileSync(join(alerts, 'b.rules.yml'), 'not: rules\n');
    r = run('--stdout');
    assert.equal(2, r.status);
    assert.match(r.stderr, /b\.rules\.yml: not a Prometheus rule file/);
  } finally {
    t.cleanup();
  }
});

test('docs/deploy.md: names every configuration file in deploy/, deploy/host/ and deploy/compose/, and every file it names exists', () => {
  const doc = readFileSync(join(REPO, 'docs/deploy.md'), 'utf8');
  const paths = [...doc.matchAll(/`((?:deploy|alerts|grafana)\/[\w./-]+)`/g)].map((m) => m[1]);
  const shipped = ['deploy', 'deploy/host', 'deploy/compose'].flatMap((dir) =>
    readdirSync(join(REPO, dir), { withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => `${dir}/${e.name}`),
  );
  for (const p of [...shipped, 'deploy/kubernetes/kustomization.yaml', 'alerts/trainwatch.rules.yml'])
    assert.ok(paths.includes(p), `docs/deploy.md must point at ${p}`);
  for (const p of paths)
    assert.ok(existsSync(join(REPO, p)) || (p.startsWith('grafana/') && !existsSync(join(REPO, 'grafana'))), `docs/deploy.md names ${p}, which does not exist`);
  assert.ok(statSync(join(REPO, 'Dockerfile')).isFile());
});

/** The ```yaml blocks of a markdown file, parsed. */
const yamlBlocks = (file: string): Y[] => [...readFileSync(join(REPO, file), 'utf8').matchAll(/^```ya?ml\n([\s\S]*?)^```/gm)].map((m) => parseYaml(m[1]));
const PROM_KEYS = ['global', 'rule_files', 'alerting', 'scrape_configs'];
const AM_KEYS = ['global', 'route', 'receivers', 'inhibit_rules', 'templates'];
const pick = (o: Y, keys: string[]) => Object.fromEntries(Object.entries(o).filter(([k]) => keys.includes(k)));

test('the Prometheus and Alertmanager snippets of README.md and docs/deploy.md pass promtool and amtool, and route to trainwatch as the shipped files do', () => {
  const promtool = requireBinary('promtool', 'prometheus');
  const amtool = requireBinary('amtool', 'prometheus-alertmanager');
  const shippedRoute = trainwatchRoute(yamlFile(join(HOST, 'alertmanager.yml')));
  const t = tmpDir('tw-snippets-');
  try {
    for (const file of ['README.md', 'docs/deploy.md']) {
      let routes = 0;
      for (const [i, block] of yamlBlocks(file).entries()) {
        const where = `${file}, yaml block ${i + 1}`;
        if (block?.scrape_configs) {
          const cfg = pick(block, PROM_KEYS);
          // rule_files name a copy of the repository's rules: point them at the repository's.
          if (cfg.rule_files) {
            for (const r of cfg.rule_files as string[]) assert.ok(existsSync(join(REPO, 'alerts', basename(r))), `${where}: ${r} is no alerts/ file`);
            cfg.rule_files = (cfg.rule_files as string[]).map((r) => join(REPO, 'alerts', basename(r)));
          }
          const f = join(t.path, `prom-${i}.yml`);
          writeFileSync(f, JSON.stringify(cfg));
          const r = spawnSync(promtool, ['check', 'config', f], { encoding: 'utf8' });
          assert.equal(0, r.status, `${where}: promtool check config:\n${r.stdout}${r.stderr}`);
        }
        if (block?.route || block?.receivers) {
          // A receivers-only snippet (more nodes) is checked under a route to its first receiver.
          const cfg = { route: { receiver: block.receivers[0].name }, ...pick(block, AM_KEYS) };
          const f = join(t.path, `am-${i}.yml`);
          writeFileSync(f, JSON.stringify(cfg));
          const r = spawnSync(amtool, ['check-config', f], { encoding: 'utf8' });
          assert.equal(0, r.status, `${where}: amtool check-config:\n${r.stdout}${r.stderr}`);
          if (!block.route) continue;
          routes++;
          const route = trainwatchRoute(block);
          assert.ok(route, `${where}: no route to the trainwatch receiver`);
          for (const k of ['matchers', 'group_wait', 'continue']) assert.deepEqual(shippedRoute[k], route[k], `${where}: the trainwatch route's ${k}`);
        }
      }
      assert.notEqual(0, routes, `${file} must show an Alertmanager route to trainwatch`);
    }
  } finally {
    t.cleanup();
  }
});

/** A Prometheus duration (15s, 1m) in seconds. */
const seconds = (d: string) => {
  const m = /^(\d+)(ms|s|m|h)$/.exec(d);
  assert.ok(m, `duration ${d}`);
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] as 'ms' | 's' | 'm' | 'h'];
};

test('the halt latency the docs give for the shipped files is their scrape interval + evaluation interval + the trainwatch route group_wait', () => {
  for (const dir of Object.values(VARIANTS)) {
    const p = yamlFile(join(dir, 'prometheus.yml'));
    const a = yamlFile(join(dir, 'alertmanager.yml'));
    const parts = [p.global.scrape_interval, p.global.evaluation_interval, trainwatchRoute(a).group_wait ?? a.route.group_wait].map(seconds);
    const want = `${parts.map((x) => `${x} s`).join(' + ')} = ${parts.reduce((x, y) => x + y)} s`;
    for (const file of ['README.md', 'docs/deploy.md', 'docs/alerts.md']) {
      const text = readFileSync(join(REPO, file), 'utf8').replace(/\s+/g, ' ');
      const claims = [...text.matchAll(/\d+ s \+ \d+ s \+ \d+ s = \d+ s/g)].map((m) => m[0]);
      assert.notEqual(0, claims.length, `${file} must say what a halt through Alertmanager takes with the shipped files`);
      for (const c of claims) assert.equal(want, c, `${file} (deploy/${basename(dir)})`);
    }
  }
  // "About 2 s" is the end-to-end test's measurement, with its 1 s intervals: said only with them.
  for (const file of ['README.md', 'docs/deploy.md', 'docs/alerts.md']) {
    const text = readFileSync(join(REPO, file), 'utf8').replace(/\s+/g, ' ');
    for (const m of text.matchAll(/about 2 s[^.]*/g)) assert.match(m[0], /1 s scrape and evaluation intervals/, `${file}: "${m[0]}"`);
  }
});

// ---------------------------------------------------------------- TLS and basic auth

test(
  'deploy/web-config.example.yml with deploy/prometheus-tls.example.yml: a real Prometheus scrapes a real trainwatch over HTTPS with basic auth, and a request without the password gets 401',
  { timeout: 120_000 },
  async () => {
    const openssl = requireBinary('openssl', 'openssl');
    const t = tmpDir('tw-deploy-tls-');
    const stops: Array<() => unknown> = [];
    try {
      // The only changes to the two files: their paths point at this test's certificate and password file.
      const cert = join(t.path, 'tls.crt');
      const key = join(t.path, 'tls.key');
      const gen = spawnSync(
        openssl,
        [
          'req',
          '-x509',
          '-newkey',
          'rsa:2048',
          '-nodes',
          '-days',
          '1',
          '-subj',
          '/CN=localhost',
          '-addext',
          'subjectAltName=IP:127.0.0.1',
          '-keyout',
          key,
          '-out',
          cert,
        ],
        { encoding: 'utf8' },
      );
      assert.equal(0, gen.status, gen.stderr);
      const web = yamlFile(join(DEPLOY, 'web-config.example.yml'));
      web.tls_server_config.cert_file = cert;
      web.tls_server_config.key_file = key;
      const webFile = join(t.path, 'web.yml');
      writeFileSync(webFile, JSON.stringify(web));
      const password = /hash of "([^"]+)"/.exec(readFileSync(join(DEPLOY, 'web-config.example.yml'), 'utf8'))![1];
      const passwordFile = join(t.path, 'password');
      writeFileSync(passwordFile, password);
      const port = await freePort();
      const tw = spawn(
        process.execPath,
        [join(REPO, 'bin/trainwatch.js'), '--root', t.path, '--web.config.file', webFile, '--web.listen-address', `127.0.0.1:${port}`],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '';
      tw.stdout.on('data', (d) => (out += d));
      tw.stderr.on('data', (d) => (out += d));
      stops.push(() => tw.kill('SIGKILL'));
      const ca = readFileSync(cert);
      const get = (auth?: string) =>
        new Promise<number>((res, rej) => {
          const r = httpsRequest(
            { host: '127.0.0.1', port, path: '/metrics', ca, headers: auth ? { authorization: `Basic ${Buffer.from(auth).toString('base64')}` } : {} },
            (m) => {
              m.resume();
              res(m.statusCode ?? 0);
            },
          );
          r.on('error', rej);
          r.end();
        });
      await waitFor(() => get().catch(() => 0), `trainwatch to serve HTTPS:\n${out}`);
      assert.equal(401, await get());
      assert.equal(401, await get('prometheus:wrong'));
      assert.equal(200, await get(`prometheus:${password}`));

      const job = structuredClone(yamlFile(join(DEPLOY, 'prometheus-tls.example.yml')).scrape_configs[0]);
      job.tls_config.ca_file = cert;
      job.basic_auth.password_file = passwordFile;
      job.static_configs = [{ targets: [`127.0.0.1:${port}`] }];
      const promCfg = { global: { scrape_interval: '1s' }, scrape_configs: [job] };
      const check = join(t.path, 'prometheus.yml');
      writeFileSync(check, JSON.stringify(promCfg));
      const promtool = spawnSync(requireBinary('promtool', 'prometheus'), ['check', 'config', check], { encoding: 'utf8' });
      assert.equal(0, promtool.status, promtool.stdout + promtool.stderr);
      const prom = await startPrometheus(JSON.stringify(promCfg));
      stops.push(() => prom.stop());
      await waitFor(
        async () => (await promQuery(prom.url, 'up{job="trainwatch"} == 1')).length === 1,
        'Prometheus to scrape trainwatch over HTTPS with basic auth',
        60_000,
        200,
      );
      assert.equal(1, (await promQuery(prom.url, 'trainwatch_build_info')).length);
    } finally {
      for (const s of stops.reverse()) await s();
      t.cleanup();
    }
  },
);
