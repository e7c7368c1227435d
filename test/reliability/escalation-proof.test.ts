// Escalation signals only a process proven to be the run's writer (issue 11): its real uid owns
// its rank's heartbeat file, and its working directory or one of its open files is inside the run
// directory. A process of another user, or one of ours with nothing in the run directory, is never
// signalled; a rank whose process passes the proof in the same run is. When trainwatch may not see
// a process's cwd and descriptors, the proof fails closed and the fix is logged once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pyJson, repoForAnyUser, requireBinary, waitFor } from '../helpers/proc.js';
import { killAtEnd, scratch, startTw } from '../helpers/reliability.js';

type T = Parameters<typeof killAtEnd>[0];

/** Heartbeat files for `pids` (rank = index): a boot and a progress record each, then silence (a stall). */
function hungRanks(run: string, pids: number[]): void {
  const ts = Date.now() / 1000 + 0.5;
  for (const [rank, pid] of pids.entries()) {
    const rec = (step: number, msg: string) => pyJson({ ts, rank, step, msg, pid, loss: 2.5, toks_per_s: 1000 }) + '\n';
    writeFileSync(join(run, `heartbeat_rank${rank}.jsonl`), rec(0, 'boot') + rec(1, 'progress'));
  }
}

/** The run's audit entries. */
const audit = (run: string) =>
  readFileSync(join(run, '.trainwatch-audit.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);

/** pid → result of the SIGUSR1 decision, once one was audited for each of `n` ranks. */
const usr1Results = (run: string, n: number) =>
  waitFor(() => {
    const got = audit(run).filter((e) => e.signal === 'SIGUSR1');
    return got.length === n ? Object.fromEntries(got.map((e) => [e.pid, e.result])) : undefined;
  }, `SIGUSR1 decided for ${n} ranks`);

/** A stand-in trainer (sleep) started before its boot record; killed at the end of the test. */
function trainer(t: T, cmd: string, args: string[], cwd: string): ChildProcess {
  const p = spawn(cmd, args, { cwd, stdio: 'ignore' });
  killAtEnd(t, p);
  return p;
}
const exited = (p: ChildProcess) => new Promise((r) => p.on('exit', r));

test(
  "escalation_to_unproven_processes: another user's process, and one of ours with neither cwd nor an open file in the run, are audited unverified and left alive; ours with its cwd in the run, or its heartbeat file open, get SIGUSR1",
  { timeout: 60_000 },
  async (t) => {
    const setpriv = requireBinary('setpriv', 'util-linux');
    const base = scratch(t);
    const run = join(base, 'run');
    const elsewhere = join(base, 'elsewhere');
    mkdirSync(run);
    mkdirSync(elsewhere);
    const foreign = trainer(t, setpriv, ['--reuid=65534', '--regid=65534', '--clear-groups', 'sleep', '600'], run);
    const inRun = trainer(t, 'sleep', ['600'], run);
    const outside = trainer(t, 'sleep', ['600'], elsewhere);
    // cwd elsewhere, but rank 3's heartbeat file held open (fd 3), as a writer that keeps it open.
    const holder = trainer(t, 'sh', ['-c', 'exec sleep 600 3>>"$1"', 'sh', join(run, 'heartbeat_rank3.jsonl')], elsewhere);
    const gone = [exited(inRun), exited(holder)];
    await waitFor(() => readFileSync(`/proc/${holder.pid}/cmdline`, 'utf8').startsWith('sleep'), 'the holder to exec sleep');
    hungRanks(run, [foreign.pid!, inRun.pid!, outside.pid!, holder.pid!]);
    await startTw(t, ['--root', base, '--halt', '1', '--watch.escalate-s', '1'], { env: { NSA_WATCH_HEARTBEAT_STALL_S: '2' } });
    assert.deepEqual({ [foreign.pid!]: 'unverified', [inRun.pid!]: 'sent', [outside.pid!]: 'unverified', [holder.pid!]: 'sent' }, await usr1Results(run, 4));
    await Promise.all(gone); // SIGUSR1 ends a sleep: the proven processes were signalled for real
    assert.equal(null, foreign.exitCode ?? foreign.signalCode, 'the process of another user is alive');
    assert.equal(null, outside.exitCode ?? outside.signalCode, 'our process with nothing in the run is alive');
  },
);

test(
  'escalation_without_sight_of_the_process: trainwatch as another user cannot read /proc/<pid>/cwd or fd of the trainers, audits them unverified, leaves them alive and logs the fix once',
  { timeout: 60_000 },
  async (t) => {
    const setpriv = requireBinary('setpriv', 'util-linux');
    if (process.getuid!() !== 0) return t.skip('needs root to run trainwatch as another user');
    const base = scratch(t);
    const run = join(base, 'run');
    mkdirSync(run);
    chmodSync(run, 0o777); // trainwatch (nobody) writes the control files and the audit log
    const ranks = [trainer(t, 'sleep', ['600'], run), trainer(t, 'sleep', ['600'], run)];
    hungRanks(
      run,
      ranks.map((p) => p.pid!),
    );
    const tw = await startTw(t, ['--root', base, '--halt', '1', '--watch.escalate-s', '1'], {
      env: { NSA_WATCH_HEARTBEAT_STALL_S: '2' },
      wrap: [setpriv, '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all'],
      repo: repoForAnyUser(),
    });
    assert.deepEqual(Object.fromEntries(ranks.map((p) => [p.pid, 'unverified'])), await usr1Results(run, 2));
    for (const p of ranks) assert.equal(null, p.exitCode ?? p.signalCode, `pid ${p.pid} is alive`);
    const logged = tw
      .logs()
      .split('\n')
      .filter((l) => l.includes('escalation cannot see the working directory'));
    assert.equal(1, logged.length, tw.logs());
    assert.match(logged[0], /Fix: run trainwatch as the trainers' user, or give it CAP_SYS_PTRACE/);
  },
);
