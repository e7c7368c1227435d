// The original watchdog's own command lines, run against the real trainwatch: the guide's
// `--dir X --halt 1 --interval 15`, no arguments at all (artifacts/train_showcase), and its
// "Multiple Watchdogs" recipe (a second watchdog for the same directory).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { parseCli } from '../../src/cli.js';
import { resolveConfig } from '../../src/config/load.js';
import { BIN, freePort, pyJson, startTrainwatch, teardown, tmpDir } from '../helpers/proc.js';

/** Runs the CLI to its exit; returns the code and everything it printed. */
function runCli(args: string[], cwd?: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('exit', (code) => resolve({ code, out }));
  });
}

const heartbeat = (dir: string) => {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'heartbeat_rank0.jsonl'), pyJson({ ts: Date.now() / 1000, rank: 0, step: 0, msg: 'boot', phase: 'start', pid: 1 }) + '\n');
};

test('--interval is the original flag for NSA_WATCH_INTERVAL_S; giving both spellings is a usage error', async () => {
  const c = resolveConfig(parseCli(['--dir', 'x', '--halt', '1', '--interval', '15'], '0').flags, {});
  assert.deepEqual([15, true, ['x']], [c['watch.interval-s'], c.halt, c.dir]);
  const both = await runCli(['--dir', 'x', '--interval', '15', '--watch.interval-s', '15', '--web.listen-address', '127.0.0.1:0']);
  assert.equal(2, both.code);
  assert.match(both.out, /--watch.interval-s and --interval are the same setting; give only one/);
  const bad = await runCli(['--dir', 'x', '--interval', '0', '--web.listen-address', '127.0.0.1:0']);
  assert.equal(2, bad.code);
  assert.match(bad.out, /--watch.interval-s: invalid value "0"/);
});

test("the guide's `--dir X --halt 1 --interval 15` starts and watches X", async (t) => {
  const d = tmpDir();
  const later = teardown(t);
  later(() => d.cleanup());
  heartbeat(join(d.path, 'train_showcase'));
  const tw = await startTrainwatch(['--dir', join(d.path, 'train_showcase'), '--halt', '1', '--interval', '15']);
  later(() => tw.stop());
  const s = (await (await fetch(`${tw.url}/api/status`)).json()) as { halt: boolean; runs: Array<{ run: string }> };
  assert.deepEqual([true, ['train_showcase']], [s.halt, s.runs.map((r) => r.run)]);
});

test('with no arguments it watches artifacts/train_showcase, as the original did, when that directory exists', async (t) => {
  const d = tmpDir();
  const later = teardown(t);
  later(() => d.cleanup());
  heartbeat(join(d.path, 'artifacts/train_showcase'));
  const tw = await startTrainwatch([], {}, d.path);
  later(() => tw.stop());
  const s = (await (await fetch(`${tw.url}/api/status`)).json()) as { runs: Array<{ run: string; dir: string }> };
  assert.deepEqual(
    [['train_showcase', join(d.path, 'artifacts/train_showcase')]],
    s.runs.map((r) => [r.run, r.dir]),
  );
  assert.match(tw.logs(), /no --dir or --root given: watching artifacts\/train_showcase/);
});

test('with no arguments and no artifacts/train_showcase it exits 2 naming the fix', async (t) => {
  const d = tmpDir();
  t.after(() => d.cleanup());
  const r = await runCli(['--web.listen-address', '127.0.0.1:0'], d.path);
  assert.equal(2, r.code);
  assert.match(r.out, /nothing to watch\. Pass --dir <run directory>.*artifacts\/train_showcase exists/);
});

/** The guide's first (rank 0) watchdog: a trainwatch on a run directory. */
async function firstWatchdog(t: Parameters<typeof teardown>[0], halt: string) {
  const d = tmpDir();
  const later = teardown(t);
  later(() => d.cleanup());
  const dir = join(d.path, 'train_showcase');
  heartbeat(dir);
  const first = await startTrainwatch(['--dir', dir, '--halt', halt]);
  later(() => first.stop());
  return { dir, first };
}

test('Multiple Watchdogs: a second trainwatch for the same directory says it is already watched and exits 0; the first keeps watching', async (t) => {
  const { dir, first } = await firstWatchdog(t, '1');
  // The guide's rank 1+ watchdog: same directory, monitoring only, same (default) port.
  const second = await runCli(['--dir', dir, '--halt', '0', '--web.listen-address', `127.0.0.1:${first.port}`]);
  assert.equal(0, second.code);
  assert.match(
    second.out,
    new RegExp(`${dir} is already watched by trainwatch \\S+ at http://127.0.0.1:${first.port} \\(mode embedded, .HALT on\\); not starting a second watchdog`),
  );
  assert.equal(200, (await fetch(`${first.url}/readyz`)).status);
});

test('Multiple Watchdogs: a second trainwatch asked to halt exits 1 when the first does not halt, naming the fix', async (t) => {
  const { dir, first } = await firstWatchdog(t, '0');
  const second = await runCli(['--dir', dir, '--halt', '1', '--web.listen-address', `127.0.0.1:${first.port}`]);
  assert.equal(1, second.code);
  assert.match(second.out, /which does not write \.HALT, while this one was asked to \(--halt 1\)\. Restart that one with --halt 1/);
});

test('a second trainwatch for another directory, or a port held by another program, exits 2 naming the fix', async (t) => {
  const d = tmpDir();
  const later = teardown(t);
  later(() => d.cleanup());
  heartbeat(join(d.path, 'a'));
  heartbeat(join(d.path, 'b'));
  const first = await startTrainwatch(['--dir', join(d.path, 'a')]);
  later(() => first.stop());
  const other = await runCli(['--dir', join(d.path, 'b'), '--web.listen-address', `127.0.0.1:${first.port}`]);
  assert.equal(2, other.code);
  assert.match(other.out, /is served by another trainwatch .* which does not watch .*\/b\. .*--web.listen-address=:0/);
  const port = await freePort();
  const foreign = createServer((_req, res) => res.end('{}'));
  await new Promise<void>((r) => foreign.listen(port, '127.0.0.1', r));
  later(() => new Promise((r) => foreign.close(r)));
  const taken = await runCli(['--dir', join(d.path, 'b'), '--web.listen-address', `127.0.0.1:${port}`]);
  assert.equal(2, taken.code);
  assert.match(taken.out, /the port is in use; pick another port/);
});
