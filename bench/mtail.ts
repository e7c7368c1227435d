// Benchmark 6: ingest lines/s of trainwatch's pipeline vs Debian's mtail on the same file.
// mtail runs bench/mtail/heartbeat.mtail (regexes for ts and toks_per_s) in --one_shot mode,
// which reads the file from the start to EOF and prints its metrics. Its wall time includes
// process start; we subtract mtail's time on an empty file, which flatters mtail slightly.
// trainwatch's figure is the in-process FileTail + HeartbeatSink pass (as in bench/ingest), as
// trainwatch runs by default: a read this big is parsed on the main thread and the parse
// thread (tail.parse-thread-bytes). The main-thread-only pass is printed beside it, and both
// sides' lines per CPU-second (mtail uses more than one core too).
// Best round of each counts. Target: trainwatch >= 4x mtail.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, freePort } from '../test/helpers/proc.js';
import { benchTmp, fmtRate, median, runMain, say, writeHeartbeatFile, type Row } from './lib.js';
import { ParsePool } from '../src/watch/parse-pool.js';
import { pipelinePass } from './pipeline.js';

const NAME = 'ingest vs mtail';
const TARGET = '≥ 4× mtail lines/s';
const BYTES = Number(process.env.TW_BENCH_INGEST_BYTES ?? 96 << 20);
const ROUNDS = 4;
const MTAIL = '/usr/bin/mtail';
const PROGS = join(REPO, 'bench/mtail');

interface MtailRun {
  wallS: number;
  cpuS: number;
  metrics: string;
}

/** One mtail --one_shot over `log`; CPU time from the shell's `times` builtin. */
async function mtailOnce(log: string, out: string): Promise<MtailRun> {
  const port = await freePort();
  const script = `"$0" --one_shot --one_shot_format prometheus --logs "$1" --progs "$2" --address 127.0.0.1 --port "$3" >"$4" 2>/dev/null; s=$?; times; exit $s`;
  const t0 = performance.now();
  const p = spawn('sh', ['-c', script, MTAIL, log, PROGS, String(port), out], { stdio: ['ignore', 'pipe', 'inherit'] });
  let times = '';
  p.stdout.on('data', (d) => (times += d));
  const code = await new Promise<number | null>((r) => p.on('exit', (c) => r(c)));
  const wallS = (performance.now() - t0) / 1000;
  if (code !== 0) throw new Error(`mtail exited with ${code}`);
  // `times`: shell user/sys, then children user/sys, e.g. "0m1.520000s 0m0.120000s"
  const child = times.trim().split('\n').pop()!.trim().split(/\s+/);
  const secs = (s: string) => {
    const m = /^(\d+)m([\d.]+)s$/.exec(s);
    return m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
  };
  return { wallS, cpuS: secs(child[0]) + secs(child[1]), metrics: readFileSync(out, 'utf8') };
}

function metric(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

runMain(NAME, TARGET, async (): Promise<Row> => {
  if (spawnSync('sh', ['-c', `command -v ${MTAIL}`]).status !== 0)
    throw new Error(`${MTAIL} is missing. Fix: apt-get install -y --no-install-recommends mtail`);
  const version = spawnSync(MTAIL, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0].trim();
  say(`mtail: ${version}`);
  const tmp = benchTmp('mtail');
  try {
    const log = join(tmp.path, 'heartbeat_rank0.jsonl');
    const empty = join(tmp.path, 'empty.jsonl');
    const out = join(tmp.path, 'mtail.out');
    writeFileSync(empty, '');
    const g = writeHeartbeatFile(log, BYTES);
    say(`fixture: ${g.lines} lines, ${(g.bytes / 2 ** 20).toFixed(0)} MiB`);
    // Warm-up: page cache, JIT, mtail binary in cache.
    await mtailOnce(log, out);
    const pool = new ParsePool((d) => say(`parse thread failed: ${d}`));
    await pipelinePass(log);
    await pipelinePass(log, pool);
    const startup: number[] = [];
    for (let i = 0; i < 3; i++) startup.push((await mtailOnce(empty, out)).wallS);
    const st = median(startup);
    const mt: number[] = [];
    const mtCpu: number[] = [];
    const tw: number[] = [];
    const twMain: number[] = [];
    const twCpu: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const m = await mtailOnce(log, out);
      const lines = metric(m.metrics, 'heartbeat_lines');
      if (lines !== g.lines) throw new Error(`mtail counted ${lines} lines, expected ${g.lines}`);
      mt.push(g.lines / Math.max(1e-3, m.wallS - st));
      mtCpu.push(m.cpuS);
      const c0 = process.cpuUsage();
      const p = await pipelinePass(log, pool);
      const c = process.cpuUsage(c0);
      const p1 = await pipelinePass(log);
      for (const x of [p, p1])
        if (x.lines !== g.lines || x.lastStep !== g.lastStep)
          throw new Error(`trainwatch read ${x.lines} lines / step ${x.lastStep}, expected ${g.lines} / ${g.lastStep}`);
      tw.push(p.lines / p.s);
      twMain.push(p1.lines / p1.s);
      twCpu.push((c.user + c.system) / 1e6);
      say(
        `round ${i + 1}: mtail ${m.wallS.toFixed(2)} s wall (${m.cpuS.toFixed(2)} s CPU) → ${fmtRate(mt[i])} lines/s; trainwatch ${p.s.toFixed(2)} s (${twCpu[i].toFixed(2)} s CPU) → ${fmtRate(tw[i])} lines/s; main thread only ${fmtRate(twMain[i])} lines/s`,
      );
    }
    // Best round of each: neighbours' noise only ever slows a pass down.
    await pool.close();
    const m = Math.max(...mt);
    const t = Math.max(...tw);
    const t1 = Math.max(...twMain);
    const ratio = t / m;
    const mPerCpu = g.lines / Math.min(...mtCpu);
    const tPerCpu = g.lines / Math.min(...twCpu);
    say(`mtail start-up on an empty file: ${(st * 1000).toFixed(0)} ms (subtracted from its wall time)`);
    say(
      `best of ${ROUNDS}: trainwatch ${fmtRate(t)} lines/s (main thread only ${fmtRate(t1)} = ${(t1 / m).toFixed(2)}×), mtail ${fmtRate(m)} lines/s → ${ratio.toFixed(2)}×`,
    );
    say(`per CPU-second: trainwatch ${fmtRate(tPerCpu)}, mtail ${fmtRate(mPerCpu)} lines → ${(tPerCpu / mPerCpu).toFixed(2)}×`);
    return {
      name: NAME,
      figure: `trainwatch ${fmtRate(t)} vs mtail ${fmtRate(m)} lines/s = ${ratio.toFixed(1)}× (main thread only: ${(t1 / m).toFixed(1)}×; per CPU-second: ${(tPerCpu / mPerCpu).toFixed(1)}×)`,
      target: TARGET,
      verdict: ratio >= 4 ? 'met' : 'MISSED',
      data: {
        trainwatchLinesPerS: t,
        trainwatchMainThreadLinesPerS: t1,
        trainwatchLinesPerCpuS: tPerCpu,
        mtailLinesPerS: m,
        mtailLinesPerCpuS: mPerCpu,
        ratio,
        mtailStartupS: st,
        lines: g.lines,
        bytes: g.bytes,
        mtailVersion: version,
        mt,
        tw,
        twMain,
        twCpu,
        mtCpu,
      },
    };
  } finally {
    tmp.cleanup();
  }
});
