// Benchmark 2: time from spawning the real trainwatch process to the first /metrics that
// shows the correct last step of a 1 GiB heartbeat file that existed before it started.
// The fixture (real heartbeat lines, generated once) is kept in the OS temp dir and reused.
// Baselines measured the same way: bare node (`node -e 0` to exit), a bare node HTTP server
// (spawn to first 200), and trainwatch on a one-step file (so the 1 GiB's own cost shows).
// Target: < 0.3 s of trainwatch work = (spawn → correct scrape) − bare node start-up.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, freePort } from '../test/helpers/proc.js';
import { benchTmp, median, runMain, say, sleep, writeHeartbeatFile, type Row } from './lib.js';

const NAME = 'first scrape, 1 GiB file';
const TARGET = '< 0.3 s over bare node';
const FIXTURE_DIR = join(tmpdir(), 'trainwatch-bench-fixture-1g');
const RUN = 'run1g';
const FIXTURE_VERSION = 3;
const GIB = 1 << 30;
const ROUNDS = 5;
const TIMEOUT_MS = 20_000;

interface Fixture {
  version: number;
  bytes: number;
  lines: number;
  lastStep: number;
}

/** The reusable 1 GiB fixture: generated once (≈10 s), checked by size and metadata after. */
function fixture(): { dir: string; meta: Fixture } {
  const dir = join(FIXTURE_DIR, RUN);
  const file = join(dir, 'heartbeat_rank0.jsonl');
  const metaPath = join(FIXTURE_DIR, 'fixture.json');
  if (existsSync(metaPath) && existsSync(file)) {
    const meta = JSON.parse(readFileSync(metaPath, 'utf8')) as Fixture;
    if (meta.version === FIXTURE_VERSION && statSync(file).size === meta.bytes) {
      say(`reusing fixture ${file} (${(meta.bytes / GIB).toFixed(2)} GiB, ${meta.lines} lines, last step ${meta.lastStep})`);
      return { dir, meta };
    }
  }
  rmSync(FIXTURE_DIR, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  say(`generating fixture ${file} (1 GiB of real heartbeat lines, once; kept for later runs)…`);
  const t0 = performance.now();
  const g = writeHeartbeatFile(file + '.part', GIB, { nanEvery: 50_000 });
  renameSync(file + '.part', file);
  const meta: Fixture = { version: FIXTURE_VERSION, bytes: g.bytes, lines: g.lines, lastStep: g.lastStep };
  writeFileSync(metaPath, JSON.stringify(meta) + '\n');
  say(`generated in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${g.lines} lines, last step ${g.lastStep}`);
  return { dir, meta };
}

/** Spawn → `done` resolves; returns seconds, and kills the child. */
async function timeSpawn(args: string[], done: (p: ReturnType<typeof spawn>) => Promise<boolean>, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const t0 = performance.now();
  const p = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
  let err = '';
  p.stderr.on('data', (d) => (err += d));
  const exited = new Promise<void>((r) => p.on('exit', () => r()));
  try {
    while (!(await done(p))) {
      if (p.exitCode !== null) throw new Error(`process exited with ${p.exitCode}: ${err.slice(-2000)}`);
      if (performance.now() - t0 > TIMEOUT_MS) throw new Error(`no result after ${TIMEOUT_MS} ms: ${err.slice(-2000)}`);
      await sleep(2);
    }
    return (performance.now() - t0) / 1000;
  } finally {
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await exited;
  }
}

async function get(url: string): Promise<string | undefined> {
  try {
    const r = await fetch(url);
    return r.ok ? await r.text() : undefined;
  } catch {
    return undefined; // not listening yet
  }
}

/** Spawn trainwatch on `dir` → first /metrics with trainwatch_step == lastStep. */
async function twToCorrectScrape(dir: string, lastStep: number): Promise<number> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/metrics`;
  const series = `trainwatch_step{run="${RUN}",rank="0"} ${lastStep}\n`;
  // alertmanager mode: the fixture's records are old, so embedded mode would write
  // .anomaly_type into the reused fixture; the ttl keeps the old run's series exported.
  const args = [BIN, '--dir', dir, '--web.listen-address', `127.0.0.1:${port}`, '--mode', 'alertmanager', '--run.ttl-s', '31536000'];
  return timeSpawn(args, async () => (await get(url))?.includes(series) ?? false);
}

runMain(NAME, TARGET, async (): Promise<Row> => {
  const { dir, meta } = fixture();
  const tiny = benchTmp('first-scrape');
  try {
    const tinyDir = join(tiny.path, RUN);
    mkdirSync(tinyDir);
    const tinyMeta = writeHeartbeatFile(join(tinyDir, 'heartbeat_rank0.jsonl'), 2000);
    const bare: number[] = [];
    const bareHttp: number[] = [];
    const twTiny: number[] = [];
    const tw1g: number[] = [];
    const httpScript = "require('http').createServer((q,s)=>s.end('ok')).listen(+process.argv[1],'127.0.0.1')";
    // Warm-up: node binary, dist/ and node_modules in the page cache, fixture tail too.
    await twToCorrectScrape(dir, meta.lastStep);
    for (let i = 0; i < ROUNDS; i++) {
      bare.push(await timeSpawn(['-e', '0'], async (p) => p.exitCode !== null));
      const port = await freePort();
      bareHttp.push(await timeSpawn(['-e', httpScript, String(port)], async () => (await get(`http://127.0.0.1:${port}/`)) !== undefined));
      twTiny.push(await twToCorrectScrape(tinyDir, tinyMeta.lastStep));
      tw1g.push(await twToCorrectScrape(dir, meta.lastStep));
      say(
        `round ${i + 1}: node -e 0 ${ms(bare[i])}, node http server ${ms(bareHttp[i])}, trainwatch tiny file ${ms(twTiny[i])}, trainwatch 1 GiB file ${ms(tw1g[i])}`,
      );
    }
    const b = median(bare);
    const bh = median(bareHttp);
    const tt = median(twTiny);
    const t = median(tw1g);
    const work = t - b;
    say(`median: spawn → correct scrape ${ms(t)} (1 GiB) / ${ms(tt)} (tiny file); bare node ${ms(b)}, bare node HTTP ${ms(bh)}`);
    say(`trainwatch work = ${ms(t)} − ${ms(b)} = ${ms(work)}; of that the 1 GiB file costs ${ms(t - tt)} over a tiny file`);
    return {
      name: NAME,
      figure: `${ms(t)} spawn→correct scrape − ${ms(b)} bare node = ${ms(work)} (tiny file: ${ms(tt)})`,
      target: TARGET,
      verdict: work < 0.3 ? 'met' : 'MISSED',
      data: {
        spawnToScrapeS: t,
        bareNodeS: b,
        bareNodeHttpS: bh,
        tinyFileS: tt,
        workS: work,
        fixtureBytes: meta.bytes,
        fixtureLines: meta.lines,
        tw1g,
        twTiny,
        bare,
        bareHttp,
      },
    };
  } finally {
    tiny.cleanup();
  }
});

function ms(s: number): string {
  return `${(s * 1000).toFixed(0)} ms`;
}
