// Escalation signals only a process proven to be the run's writer (issue 11): one whose real uid
// is not the owner of its rank's heartbeat file is never signalled, even though it started as
// the writer did; a rank whose process passes the proof in the same run is signalled.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pyJson, requireBinary, waitFor } from '../helpers/proc.js';
import { killAtEnd, scratch, startTw } from '../helpers/reliability.js';

test(
  'escalation_to_another_users_process: a hung rank whose pid runs as nobody while its heartbeat file is ours is audited unverified and left alive; the rank whose process is ours gets SIGUSR1',
  { timeout: 60_000 },
  async (t) => {
    const setpriv = requireBinary('setpriv', 'util-linux');
    const base = scratch(t);
    const run = join(base, 'run');
    mkdirSync(run);
    // Stand-ins for the two ranks' trainers, started before their boot records.
    const foreign = spawn(setpriv, ['--reuid=65534', '--regid=65534', '--clear-groups', 'sleep', '600'], { stdio: 'ignore' });
    const own = spawn('sleep', ['600'], { stdio: 'ignore' });
    killAtEnd(t, foreign);
    killAtEnd(t, own);
    const ownGone = new Promise((r) => own.on('exit', r));
    const ts = Date.now() / 1000 + 0.5;
    for (const [rank, pid] of [
      [0, foreign.pid!],
      [1, own.pid!],
    ]) {
      const rec = (step: number, msg: string) => pyJson({ ts, rank, step, msg, pid, loss: 2.5, toks_per_s: 1000 }) + '\n';
      writeFileSync(join(run, `heartbeat_rank${rank}.jsonl`), rec(0, 'boot') + rec(1, 'progress'));
    }
    await startTw(t, ['--root', base, '--halt', '1', '--watch.escalate-s', '1'], { env: { NSA_WATCH_HEARTBEAT_STALL_S: '2' } });
    const audit = () =>
      readFileSync(join(run, '.trainwatch-audit.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    const usr1 = await waitFor(() => {
      const got = audit().filter((e) => e.signal === 'SIGUSR1');
      return got.length === 2 ? got : undefined;
    }, 'SIGUSR1 decided for both ranks');
    assert.deepEqual({ [foreign.pid!]: 'unverified', [own.pid!]: 'sent' }, Object.fromEntries(usr1.map((e) => [e.pid, e.result])));
    await ownGone; // SIGUSR1 ends a sleep: the proven process was signalled for real
    assert.equal(null, foreign.exitCode ?? foreign.signalCode, 'the process of another user is alive');
  },
);
