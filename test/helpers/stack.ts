// Real Prometheus and Alertmanager (Debian packages) on free loopback ports, for tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, requireBinary, tmpDir, waitFor } from './proc.js';

/** A running server process with its base URL. */
export interface Service {
  url: string;
  port: number;
  proc: ChildProcess;
  logs(): string;
  stop(): Promise<void>;
}

function launch(bin: string, args: string[], readyUrl: string, cleanup: () => void): Promise<Service> & { proc: ChildProcess } {
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const exited = new Promise<void>((r) => proc.on('exit', () => r()));
  const url = readyUrl.replace(/\/-\/ready$/, '');
  const p = waitFor(
    async () => {
      if (proc.exitCode !== null) throw new Error(`${bin} exited with ${proc.exitCode}`);
      return (await fetch(readyUrl)).ok;
    },
    `${bin} to become ready`,
    30_000,
    100,
  )
    .then(() => ({
      url,
      port: Number(new URL(url).port),
      proc,
      logs: () => out,
      stop: async () => {
        if (proc.exitCode === null) proc.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000).unref())]);
        if (proc.exitCode === null) proc.kill('SIGKILL');
        cleanup();
      },
    }))
    .catch((e: Error) => {
      proc.kill('SIGKILL');
      cleanup();
      throw new Error(`${e.message}\n--- ${bin} output ---\n${out}`);
    });
  return Object.assign(p, { proc });
}

/** Starts Prometheus with the given prometheus.yml text; `extraFiles` are written beside it, where relative rule_files resolve. */
export async function startPrometheus(configYaml: string, extraFiles: Record<string, string> = {}): Promise<Service & { dir: string }> {
  const bin = requireBinary('prometheus', 'prometheus');
  const t = tmpDir('tw-prom-');
  for (const [name, text] of Object.entries(extraFiles)) writeFileSync(join(t.path, name), text);
  writeFileSync(join(t.path, 'prometheus.yml'), configYaml.replaceAll('$DIR', t.path));
  const port = await freePort();
  const svc = await launch(
    bin,
    [
      `--config.file=${join(t.path, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(t.path, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--web.enable-lifecycle',
      '--log.level=warn',
    ],
    `http://127.0.0.1:${port}/-/ready`,
    t.cleanup,
  );
  return { ...svc, dir: t.path };
}

/** Runs an instant PromQL query; returns the result vector. */
export async function promQuery(promUrl: string, expr: string): Promise<Array<{ metric: Record<string, string>; value: [number, string] }>> {
  const r = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await r.json()) as {
    status: string;
    error?: string;
    data?: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> };
  };
  if (body.status !== 'success') throw new Error(`query ${expr} failed: ${body.error}`);
  return body.data!.resultType === 'vector' ? body.data!.result : [];
}

/**
 * Starts one Alertmanager replica; `peers` are other replicas' cluster addresses. `args` replaces
 * the cluster flags (a replica on a loopback cluster port) with the caller's, e.g. the ARGS of a
 * shipped /etc/default file; clusterAddress is then ''. The config file and `extraFiles` share one
 * directory, so relative paths in the config (credentials_file) resolve to them.
 */
export async function startAlertmanager(
  configYaml: string,
  opts: { clusterPort?: number; peers?: string[]; extraFiles?: Record<string, string>; peerTimeout?: string; args?: string[] } = {},
): Promise<Service & { clusterAddress: string; dir: string }> {
  const bin = requireBinary('prometheus-alertmanager', 'prometheus-alertmanager');
  const t = tmpDir('tw-am-');
  for (const [name, text] of Object.entries(opts.extraFiles ?? {})) writeFileSync(join(t.path, name), text);
  writeFileSync(join(t.path, 'alertmanager.yml'), configYaml.replaceAll('$DIR', t.path));
  const port = await freePort();
  const clusterAddress = opts.args ? '' : `127.0.0.1:${opts.clusterPort ?? (await freePort())}`;
  const cluster = opts.args ?? [
    `--cluster.listen-address=${clusterAddress}`,
    `--cluster.advertise-address=${clusterAddress}`,
    `--cluster.peer-timeout=${opts.peerTimeout ?? '1s'}`,
    '--cluster.gossip-interval=50ms',
    '--cluster.pushpull-interval=1s',
    ...(opts.peers ?? []).map((p) => `--cluster.peer=${p}`),
  ];
  const args = [
    `--config.file=${join(t.path, 'alertmanager.yml')}`,
    `--storage.path=${join(t.path, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
    ...cluster,
  ];
  const svc = await launch(bin, args, `http://127.0.0.1:${port}/-/ready`, t.cleanup);
  return { ...svc, clusterAddress, dir: t.path };
}
