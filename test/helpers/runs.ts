// A root of 200 run directories in every state the status page shows, written as real
// trainers lay them out (for the status page's browser test, and for looking at the page).
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pyJson } from './proc.js';

/** A run name that is HTML. */
export const HOSTILE = '<img src=x onerror="window.__pwned=1">';
/** A run name with every character HTML escapes. */
export const QUIRKY = "a&b <i>'quoted'";

/**
 * 200 run directories, written as the real trainer lays them out: rank 0 writes boot and
 * progress, rank 1 boot only. Records of running trainers carry `livePid`, a process that
 * started just before (trainwatch checks that a pid's process started before its records);
 * those of trainers that ended carry the pid of a process that has exited; stalled runs carry
 * none (a trainer on another host). Watch them with watch.pid-check=on, so a pid never seen
 * alive counts as gone. Returns how many runs should end up in each state.
 */
export function writeRuns(root: string, livePid: number): Record<string, number> {
  const now = Date.now() / 1000;
  const dead = spawnSync('true').pid;
  const write = (name: string, rank: number, recs: Array<Record<string, unknown>>) => {
    mkdirSync(join(root, name), { recursive: true });
    appendFileSync(join(root, name, `heartbeat_rank${rank}.jsonl`), recs.map((r) => pyJson({ rank, ...r }) + '\n').join(''));
  };
  /** boot on both ranks at `t0`, then `n` progress records on rank 0 spread up to `t1` */
  const run = (name: string, o: { t0: number; t1?: number; n?: number; pid?: number; loss?: (i: number) => number }) => {
    const pid = o.pid === undefined ? {} : { pid: o.pid };
    const boot = { ts: o.t0, step: 0, msg: 'boot', phase: 'start', ...pid };
    const n = o.n ?? 0;
    const progress = Array.from({ length: n }, (_, i) => ({
      ts: o.t0 + ((o.t1! - o.t0) * (i + 1)) / n,
      step: 10 * (i + 1),
      msg: 'progress',
      loss: o.loss ? o.loss(i) : 3 - i / 100,
      toks_per_s: 40000 + 100 * i,
      grad_norm: 1,
      ...pid,
    }));
    write(name, 0, [boot, ...progress]);
    write(name, 1, [{ ...boot, rank: 1 }]);
  };
  const halt = (name: string, text: string) => writeFileSync(join(root, name, '.HALT'), text);
  const pad = (i: number) => String(i).padStart(3, '0');
  const live = { t0: now - 3, t1: now, pid: livePid };
  const ended = { t0: now - 300, t1: now - 100, pid: dead };
  for (let i = 1; i <= 3; i++) run(`stalled-${i}`, { t0: now - 2000, t1: now - 1800, n: 3 });
  for (let i = 1; i <= 2; i++) run(`nan-${i}`, { ...live, n: 3, loss: (k) => (k === 2 ? NaN : 3) });
  for (let i = 1; i <= 4; i++) {
    run(`halting-${i}`, { ...live, n: 3 });
    halt(`halting-${i}`, 'halt: heartbeat_stall\n');
  }
  for (let i = 1; i <= 5; i++) run(`flat-loss-${i}`, { ...live, n: 12, loss: () => 2.5 });
  for (let i = 1; i <= 6; i++) run(`starting-${i}`, { ...live });
  for (let i = 1; i <= 118; i++) run(`train-${pad(i)}`, { ...live, n: 3 });
  // Records without a pid: trainwatch cannot tell finished from hung, and says so.
  run('train-no-pid', { t0: now - 100, t1: now - 5, n: 3 });
  run(QUIRKY, { ...live, n: 3 });
  run(HOSTILE, { ...ended, n: 3 });
  halt(HOSTILE, 'halt: </script><script>window.__pwned=2</script>\n');
  for (let i = 1; i <= 19; i++) {
    run(`halted-stall-${pad(i)}`, { ...ended, n: 3 });
    halt(`halted-stall-${pad(i)}`, 'halt: heartbeat_stall\n');
  }
  // The trainer's own NaN abort: it writes both control files, then every rank exits.
  for (let i = 1; i <= 10; i++) {
    run(`halted-nan-${pad(i)}`, { ...ended, n: 2 });
    halt(`halted-nan-${pad(i)}`, 'halt: nan_loss\n');
    writeFileSync(join(root, `halted-nan-${pad(i)}`, '.anomaly_type'), 'nan_loss\n');
  }
  for (let i = 1; i <= 20; i++) run(`finished-${pad(i)}`, { ...ended, n: 3 });
  for (let i = 1; i <= 10; i++) run(`expired-${pad(i)}`, { t0: now - 9 * 3600, t1: now - 8 * 3600, n: 3, pid: dead });
  return { anomalous: 3 + 2 + 5, halt_requested: 4, crashed: 0, starting: 6, training: 120, halted: 30, finished: 20, expired: 10 };
}
