// `trainwatch demo`: a simulated trainer, an injected fault, and trainwatch catching it.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { start } from './app.js';
import type { Config } from './config/settings.js';
import type { Logger } from './log.js';

const FAULTS = ['nonfinite_loss', 'throughput_flatline', 'heartbeat_stall', 'watchdog_dump', 'zero_grad', 'loss_flatline', 'gate_collapse'];

/** Runs the demo; returns the exit code. */
export async function runDemo(base: Config, log: Logger, opts: { fault: string; keep: boolean }): Promise<number> {
  if (!FAULTS.includes(opts.fault)) {
    process.stderr.write(`trainwatch demo: unknown --fault '${opts.fault}'; choose one of ${FAULTS.join(', ')}\n`);
    return 2;
  }
  const root = mkdtempSync(join(tmpdir(), 'trainwatch-demo-'));
  const dir = join(root, 'demo_run');
  mkdirSync(dir);
  const hung = opts.fault === 'heartbeat_stall' || opts.fault === 'watchdog_dump';
  const config: Config = {
    ...base,
    dir: [dir],
    root: [],
    halt: true,
    mode: 'embedded',
    'watch.heartbeat-stall-s': 4,
    'watch.flatline-n': 5,
    'watch.startup-grace-s': 10,
    // A hung loop never reads .HALT: escalate to SIGUSR1 and then SIGTERM, quickly.
    'watch.escalate-s': hung ? 2 : 0,
    'watch.escalate-term-s': hung ? 2 : 0,
    // The trainer catches SIGTERM (dumps stacks, runs on): only SIGKILL ends a hung one.
    'watch.escalate-kill-s': hung ? 2 : 0,
    'watch.interval-s': 1,
    'tail.sweep-interval-s': 0.5,
    'web.listen-address': base['web.listen-address'] === ':9465' ? '127.0.0.1:0' : base['web.listen-address'],
  };
  const say = (s: string) => process.stdout.write(`[demo] ${s}\n`);
  const script = fileURLToPath(new URL('../../scripts/sim_trainer.py', import.meta.url));
  say(`run directory: ${dir}`);
  say(`starting a simulated 2-rank trainer; fault '${opts.fault}' at step 40`);
  const trainer = spawn(
    'python3',
    [
      script,
      '--dir',
      dir,
      '--ranks',
      '2',
      '--step-s',
      '0.1',
      '--fault',
      opts.fault === 'nonfinite_loss' ? 'nonfinite_grad' : opts.fault,
      '--fault-at',
      '40',
      '--quiet',
    ],
    // In its run directory, as a launch script that cds there: escalation signals only a process
    // whose cwd or an open file is in the run (docs/detection.md).
    { cwd: dir, stdio: ['ignore', 'inherit', 'inherit'] },
  );
  const exited = new Promise<number | null>((resolve) => trainer.on('exit', (code) => resolve(code)));
  trainer.on('error', (e) => say(`cannot start python3 (${e.message}); install Python 3 to run the demo`));
  const running = await start(config, log);
  say(`trainwatch status page: http://127.0.0.1:${running.server.port}/  metrics: http://127.0.0.1:${running.server.port}/metrics`);
  say(opts.keep ? '--keep: both stay up after the demo until Ctrl-C' : 'both stop when the demo ends; run `trainwatch demo --keep` to look at them afterwards');
  const t0 = Date.now();
  let shown = 0;
  let detected = false;
  let halted = false;
  // What trainwatch did comes from its audit memory, not from sampling the live state: an
  // anomaly can be detected, acted on and quieted by the .HALT between two samples.
  const report = () => {
    const run = running.watcher.runs.values().next().value;
    if (!run) return;
    const step = Math.max(-1, ...[...run.ranks.values()].map((s) => s.step ?? -1));
    if (step >= shown + 10) {
      shown = step - (step % 10);
      say(`training… step ${step}${step >= 40 ? ' (fault injected at step 40)' : ''}`);
    }
    const audit = running.watcher.actions.recent(run.real);
    const found = audit.filter((e) => e.event === 'anomaly');
    if (!detected && found.length > 0) {
      detected = true;
      say(`trainwatch detected: ${found.map((a) => `${a.kind} on rank ${a.rank} (${a.message})`).join('; ')}`);
    }
    if (!halted && audit.some((e) => e.event === 'action' && e.action === 'halt' && e.result === 'ok')) {
      halted = true;
      say(
        `.HALT written${hung ? '; the loop is hung and will not read it, so trainwatch escalates: SIGUSR1 (stack dump), then SIGTERM, then SIGKILL' : '; the trainer stops at its next step'}`,
      );
    }
  };
  const timer = setInterval(report, 100);
  const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 90_000))]);
  clearInterval(timer);
  report(); // what happened since the last sample
  const read = (f: string) => (existsSync(join(dir, f)) ? readFileSync(join(dir, f), 'utf8').trim() : '(absent)');
  if (code === 'timeout') {
    say('the trainer did not stop within 90 s; stopping it');
    trainer.kill('SIGKILL');
  } else {
    say(`trainer exited (code ${code}) ${((Date.now() - t0) / 1000).toFixed(1)} s after start`);
  }
  say(`.anomaly_type: ${read('.anomaly_type')}`);
  say(`.HALT:         ${read('.HALT')}`);
  say(`audit log:     ${join(dir, '.trainwatch-audit.jsonl')}`);
  if (opts.fault === 'nonfinite_loss') say('try another fault: trainwatch demo --fault heartbeat_stall (or throughput_flatline, watchdog_dump, …)');
  if (opts.keep) {
    say('--keep: still serving; press Ctrl-C to stop');
    await new Promise<void>((r) => process.once('SIGINT', () => r()));
  }
  await running.stop();
  return code === 'timeout' ? 1 : 0;
}
