// The actions module in-process: episodes, re-arming, retries, confinement, restart memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  rmdirSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { Actions, type RunRef } from '../../src/actions/actions.js';
import { AppendLog, ConfinementError } from '../../src/actions/files.js';
import type { Anomaly } from '../../src/detect/detect.js';
import { makeLogger } from '../../src/log.js';
import { Stats } from '../../src/watch/stats.js';
import { REPO, tmpDir, waitFor } from '../helpers/proc.js';

const quiet = makeLogger('error', 'json', { write: () => true } as unknown as NodeJS.WritableStream);
const stall: Anomaly = { kind: 'heartbeat_stall', rank: 0, value: 200, threshold: 180, message: 'no heartbeat' };
const flat: Anomaly = { kind: 'throughput_flatline', rank: 1, value: 5, threshold: 5, message: 'flat' };

function setup(halt = true) {
  const d = tmpDir('tw-act-');
  const dir = join(d.path, 'run');
  mkdirSync(dir);
  const run: RunRef = { name: 'run', dir, real: realpathSync(dir) };
  const stats = new Stats();
  const mk = () => new Actions({ halt, by: 'test', escalateS: 0, escalateTermS: 0, escalateKillS: 0, autoClearHalt: false, log: quiet, stats });
  const audit = () =>
    existsSync(join(dir, '.trainwatch-audit.jsonl'))
      ? readFileSync(join(dir, '.trainwatch-audit.jsonl'), 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as Record<string, unknown>)
      : [];
  const read = (f: string) => (existsSync(join(dir, f)) ? readFileSync(join(dir, f), 'utf8') : undefined);
  return { d, dir, run, stats, actions: mk(), mk, audit, read };
}

test('an episode writes once; a deleted .anomaly_type stays deleted while it lasts; after recovery the next episode writes again', async () => {
  const { d, run, actions, audit, read, dir } = setup(false);
  await actions.reconcile(run, [flat], 1000);
  assert.equal('throughput_flatline\n', read('.anomaly_type'));
  rmSync(join(dir, '.anomaly_type'));
  await actions.reconcile(run, [flat], 1010);
  assert.equal(undefined, read('.anomaly_type'));
  await actions.reconcile(run, [], 1020);
  await actions.reconcile(run, [flat], 1030);
  assert.equal('throughput_flatline\n', read('.anomaly_type'));
  assert.deepEqual(
    ['anomaly', 'resolved', 'anomaly'],
    audit()
      .filter((e) => e.event !== 'action')
      .map((e) => e.event),
  );
  d.cleanup();
});

test('while a .HALT is there, a new episode is audited but rewrites none of the control files', async () => {
  const { d, run, actions, audit, read, dir } = setup();
  await actions.reconcile(run, [stall], 1000);
  rmSync(join(dir, '.anomaly_type'));
  await actions.reconcile(run, [], 1020);
  await actions.reconcile(run, [flat], 1030);
  assert.equal(undefined, read('.anomaly_type'));
  assert.equal('halt: heartbeat_stall\n', read('.HALT'));
  assert.deepEqual(
    ['heartbeat_stall', 'throughput_flatline'],
    audit()
      .filter((e) => e.event === 'anomaly')
      .map((e) => e.kind),
  );
  assert.deepEqual(
    ['ok'],
    audit()
      .filter((e) => e.action === 'halt')
      .map((e) => e.result),
  );
  d.cleanup();
});

test('two kinds in one batch: .anomaly_type, .anomaly.json and .HALT all name the higher-priority kind', async () => {
  const { d, run, actions, read } = setup();
  const fetch: Anomaly = { kind: 'fetch_stall', rank: 0, value: 9, threshold: 3, message: 'slow' };
  const nan: Anomaly = { kind: 'nonfinite_loss', rank: 0, value: 1, threshold: 1, message: 'nan' };
  await actions.reconcile(run, [fetch, nan], 1000);
  assert.equal('nonfinite_loss\n', read('.anomaly_type'));
  assert.equal('nonfinite_loss', (JSON.parse(read('.anomaly.json')!) as { kind: string }).kind);
  assert.equal('halt: nonfinite_loss\n', read('.HALT'));
  d.cleanup();
});

test('a kind that is quiet while halted keeps its episode open instead of resolving when .HALT appears', async () => {
  const { d, run, actions, audit, read, dir } = setup(false);
  await actions.reconcile(run, [stall, flat], 1000);
  rmSync(join(dir, '.anomaly_type')); // the operator's handler did its job
  // .HALT appears: the detector stops reporting the stall (silence is expected now) and the
  // flatline is over. Only the flatline's episode ends.
  await actions.reconcile({ ...run, halted: true }, [], 1001);
  assert.deepEqual(
    ['throughput_flatline'],
    audit()
      .filter((e) => e.event === 'resolved')
      .map((e) => e.kind),
  );
  // .HALT is removed and the run is still silent: the same stall episode, so nothing is
  // audited or written again.
  await actions.reconcile(run, [stall], 1002);
  assert.deepEqual(
    ['anomaly:heartbeat_stall', 'anomaly:throughput_flatline', 'resolved:throughput_flatline'],
    audit()
      .filter((e) => e.event !== 'action')
      .map((e) => `${e.event}:${e.kind}`)
      .sort(),
  );
  assert.equal(undefined, read('.anomaly_type'));
  d.cleanup();
});

test('two kinds at once: both are audited, and the more important one is left in .anomaly_type', async () => {
  const { d, run, actions, audit, read } = setup(false);
  await actions.reconcile(run, [flat, stall], 1000);
  assert.equal('heartbeat_stall\n', read('.anomaly_type'));
  assert.equal(undefined, read('.HALT'));
  assert.deepEqual(
    ['throughput_flatline', 'heartbeat_stall'],
    audit()
      .filter((e) => e.event === 'anomaly')
      .map((e) => e.kind),
  );
  d.cleanup();
});

test('a failed write is counted, audited and retried at the next evaluation until it succeeds', async () => {
  const { d, run, actions, audit, read, dir, stats } = setup();
  mkdirSync(join(dir, '.anomaly_type'));
  await assert.rejects(actions.reconcile(run, [stall], 1000));
  assert.equal(1, stats.actions.get('anomaly_type|failed'));
  assert.equal('halt: heartbeat_stall\n', read('.HALT')); // the other actions still went ahead
  rmdirSync(join(dir, '.anomaly_type'));
  await actions.reconcile(run, [stall], 1010);
  assert.equal('heartbeat_stall\n', read('.anomaly_type'));
  assert.deepEqual(
    ['failed', 'ok'],
    audit()
      .filter((e) => e.action === 'anomaly_type')
      .map((e) => e.result),
  );
  assert.equal(1, audit().filter((e) => e.event === 'anomaly').length);
  d.cleanup();
});

test('a restart reads the audit log back: the open episode continues and nothing is written twice', async () => {
  const { d, run, actions, mk, audit, dir } = setup();
  await actions.reconcile(run, [stall], 1000);
  rmSync(join(dir, '.anomaly_type'));
  const again = mk();
  await again.reconcile(run, [stall], 1100);
  assert.equal(false, existsSync(join(dir, '.anomaly_type')));
  assert.equal(1, audit().filter((e) => e.event === 'anomaly').length);
  assert.equal(3, audit().filter((e) => e.event === 'action').length);
  d.cleanup();
});

test('symlinks planted at .HALT and at the temp paths are never followed', async () => {
  const { d, run, actions, dir, audit } = setup();
  const victim = join(d.path, 'victim');
  writeFileSync(victim, 'keep\n');
  symlinkSync(victim, join(dir, '.HALT'));
  symlinkSync(victim, join(dir, '.anomaly_type'));
  await actions.reconcile(run, [stall], 1000);
  assert.equal('keep\n', readFileSync(victim, 'utf8'));
  // Both symlinks were replaced by files (a symlink at .HALT is not a halt the trainer can rely on).
  assert.equal('heartbeat_stall\n', readFileSync(join(dir, '.anomaly_type'), 'utf8'));
  assert.equal('halt: heartbeat_stall\n', readFileSync(join(dir, '.HALT'), 'utf8'));
  assert.equal('replaced_non_regular', audit().find((e) => e.action === 'halt')!.result);
  d.cleanup();
});

test('a run directory swapped for a symlink elsewhere is refused: nothing is written outside', async () => {
  const { d, run, actions, dir } = setup();
  const elsewhere = join(d.path, 'elsewhere');
  mkdirSync(elsewhere);
  renameSync(dir, join(d.path, 'moved'));
  symlinkSync(elsewhere, dir);
  await actions.reconcile(run, [stall], 1000).catch(() => undefined);
  assert.equal(false, existsSync(join(elsewhere, '.HALT')));
  assert.equal(false, existsSync(join(elsewhere, '.anomaly_type')));
  d.cleanup();
});

test('an audit log deleted while trainwatch runs is re-created by the next entry, and the open episode is remembered', async (t) => {
  const { d, run, actions, audit, dir } = setup();
  t.after(() => actions.close().then(() => d.cleanup()));
  await actions.reconcile(run, [stall], 1000);
  rmSync(join(dir, '.trainwatch-audit.jsonl'));
  await actions.reconcile(run, [], 1010);
  assert.deepEqual(
    ['resolved'],
    audit().map((e) => e.event),
  );
});

test('a rotated audit log (renamed away) gets no more entries: they go to a new file under the name', async (t) => {
  const { d, run, actions, audit, dir } = setup();
  t.after(() => actions.close().then(() => d.cleanup()));
  await actions.reconcile(run, [stall], 1000);
  renameSync(join(dir, '.trainwatch-audit.jsonl'), join(dir, '.trainwatch-audit.jsonl.1'));
  const rotated = readFileSync(join(dir, '.trainwatch-audit.jsonl.1'), 'utf8');
  await actions.reconcile(run, [], 1010);
  assert.equal(rotated, readFileSync(join(dir, '.trainwatch-audit.jsonl.1'), 'utf8'));
  assert.deepEqual(
    ['resolved'],
    audit().map((e) => e.event),
  );
});

test('a run directory swapped for a symlink after its audit log was opened: the next entry is refused, nothing is written outside', async (t) => {
  const { d, run, actions, dir } = setup();
  t.after(() => actions.close().then(() => d.cleanup()));
  await actions.reconcile(run, [stall], 1000);
  const elsewhere = join(d.path, 'elsewhere');
  mkdirSync(elsewhere);
  renameSync(dir, join(d.path, 'moved'));
  symlinkSync(elsewhere, dir);
  await assert.rejects(actions.reconcile(run, [], 1010), ConfinementError);
  assert.deepEqual([], readdirSync(elsewhere));
});

test('killed between the control-file writes and their audit entries: the restart records each action once, .HALT as written, and escalation follows', async (t) => {
  const { d, run, stats, dir, audit } = setup();
  const mk = () => new Actions({ halt: true, by: 'test', escalateS: 60, escalateTermS: 0, escalateKillS: 0, autoClearHalt: false, log: quiet, stats });
  const first = mk();
  t.after(() => first.close().then(() => d.cleanup()));
  await first.reconcile(run, [stall], 1000);
  // What a kill -9 before the one append of the action entries leaves: the intent only.
  const log = join(dir, '.trainwatch-audit.jsonl');
  writeFileSync(log, readFileSync(log, 'utf8').split('\n')[0] + '\n');
  const again = mk();
  t.after(() => again.close());
  const procs = [{ pid: 2 ** 22 + 17, verify: () => false, fact: 'alive' as const }]; // above pid_max: not the trainer, whatever it claims
  await again.reconcile({ ...run, halted: true }, [stall], 1010, procs);
  const actions = audit().filter((e) => e.event === 'action');
  assert.deepEqual(
    ['anomaly_type', 'details', 'halt'],
    actions.map((e) => e.action),
  );
  assert.deepEqual({ result: 'ok', recovered: true }, { result: actions[2].result, recovered: actions[2].recovered });
  assert.equal('halt: heartbeat_stall\n', readFileSync(join(dir, '.HALT'), 'utf8'));
  await again.reconcile({ ...run, halted: true }, [stall], 1010 + 60, procs);
  assert.equal('unverified', audit().find((e) => e.action === `sigusr1:${procs[0].pid}`)?.result);
});

test('a .HALT older than the restored episode, or with another reason, is not taken for its own: it counts as found', async (t) => {
  for (const [content, ageS] of [
    ['halt: heartbeat_stall\n', 3600],
    ['halt: by hand\n', 0],
  ] as const) {
    const { d, run, stats, dir, audit } = setup();
    const mk = () => new Actions({ halt: true, by: 'test', escalateS: 0, escalateTermS: 0, escalateKillS: 0, autoClearHalt: false, log: quiet, stats });
    const now = Date.now() / 1000;
    const first = mk();
    await first.reconcile(run, [stall], now);
    await first.close();
    const log = join(dir, '.trainwatch-audit.jsonl');
    writeFileSync(log, readFileSync(log, 'utf8').split('\n')[0] + '\n');
    writeFileSync(join(dir, '.HALT'), content);
    utimesSync(join(dir, '.HALT'), now - ageS, now - ageS);
    const again = mk();
    t.after(() => again.close().then(() => d.cleanup()));
    await again.reconcile(run, [stall], now + 10);
    const halt = audit().find((e) => e.action === 'halt')!;
    assert.deepEqual({ result: 'exists', recovered: undefined }, { result: halt.result, recovered: halt.recovered }, JSON.stringify(content));
    assert.equal(content, readFileSync(join(dir, '.HALT'), 'utf8'));
  }
});

test('audit log handles: one per log, closed when the run is forgotten, and after being idle', async (t) => {
  const d = tmpDir('tw-act-');
  t.after(() => d.cleanup());
  const a = join(d.path, 'a');
  const b = join(d.path, 'b');
  mkdirSync(a);
  mkdirSync(b);
  const logs = new AppendLog(200);
  t.after(() => logs.close());
  for (let i = 0; i < 3; i++) for (const dir of [a, b]) await logs.append(dir, realpathSync(dir), 'x.jsonl', `{"i":${i}}`);
  assert.equal(2, logs.openHandles);
  assert.equal('{"i":0}\n{"i":1}\n{"i":2}\n', readFileSync(join(a, 'x.jsonl'), 'utf8'));
  await logs.closeDir(realpathSync(a));
  assert.equal(1, logs.openHandles);
  await logs.append(a, realpathSync(a), 'x.jsonl', '{"i":3}\n');
  assert.equal('{"i":0}\n{"i":1}\n{"i":2}\n{"i":3}\n', readFileSync(join(a, 'x.jsonl'), 'utf8'));
  await waitFor(() => logs.openHandles === 0, 'idle handles closed', 30_000);
});

test('a symlink planted at the audit log is never followed: the entry is refused and its target untouched', async (t) => {
  const { d, run, actions, dir } = setup();
  t.after(() => actions.close().then(() => d.cleanup()));
  const victim = join(d.path, 'victim');
  writeFileSync(victim, 'keep\n');
  symlinkSync(victim, join(dir, '.trainwatch-audit.jsonl'));
  await assert.rejects(actions.reconcile(run, [stall], 1000), /ELOOP/);
  assert.equal('keep\n', readFileSync(victim, 'utf8'));
});

// Control files and the audit log against hostile run directories (issue 11).

function capture() {
  const lines: string[] = [];
  const log = makeLogger('error', 'json', { write: (s: string) => (lines.push(s), true) } as unknown as NodeJS.WritableStream);
  return { log, text: () => lines.join('') };
}

test('a dangling .HALT symlink planted in the run is replaced by a real .HALT, audited as replaced_non_regular, and nothing is created through it', async (t) => {
  const { d, run, actions, dir, audit, stats } = setup();
  t.after(() => actions.close().then(() => d.cleanup()));
  const target = join(d.path, 'nowhere');
  symlinkSync(target, join(dir, '.HALT'));
  await actions.reconcile(run, [stall], 1000);
  assert.equal(true, lstatSync(join(dir, '.HALT')).isFile());
  assert.equal('halt: heartbeat_stall\n', readFileSync(join(dir, '.HALT'), 'utf8'));
  assert.equal(false, existsSync(target));
  assert.equal('replaced_non_regular', audit().find((e) => e.action === 'halt')!.result);
  assert.equal(1, stats.actions.get('halt|replaced_non_regular'));
});

test('a directory named .HALT is not removed: the halt fails with an error naming the fix, and succeeds at the next evaluation once it is gone', async (t) => {
  const { d, run, actions, dir, audit } = setup();
  t.after(() => actions.close().then(() => d.cleanup()));
  mkdirSync(join(dir, '.HALT'));
  await assert.rejects(actions.reconcile(run, [stall], 1000), /rmdir/);
  assert.match(String(audit().find((e) => e.action === 'halt')!.error), /is a directory: remove it \(rmdir\)/);
  rmdirSync(join(dir, '.HALT'));
  await actions.reconcile(run, [stall], 1010);
  assert.equal('halt: heartbeat_stall\n', readFileSync(join(dir, '.HALT'), 'utf8'));
  assert.deepEqual(
    ['failed', 'ok'],
    audit()
      .map((e) => e.result)
      .filter(Boolean)
      .slice(-2),
  );
});

test('an audit log that is a directory does not stop the halt: the run is halted, the fix is logged, the failed read and appends are counted', async (t) => {
  const { d, run, dir, stats, read } = setup();
  const { log, text } = capture();
  const actions = new Actions({ halt: true, by: 'test', escalateS: 0, escalateTermS: 0, escalateKillS: 0, autoClearHalt: false, log, stats });
  t.after(() => actions.close().then(() => d.cleanup()));
  mkdirSync(join(dir, '.trainwatch-audit.jsonl'));
  await assert.rejects(actions.reconcile(run, [stall], 1000));
  assert.equal('halt: heartbeat_stall\n', read('.HALT'));
  assert.equal('heartbeat_stall\n', read('.anomaly_type'));
  assert.equal(1, stats.auditErrors.read_refused);
  assert.equal(true, stats.auditErrors.append_failed >= 1);
  assert.match(text(), /cannot read the audit log: acting without its memory.*Fix: it is not a regular file; move it away/);
  // The episode is remembered in memory: the next evaluation writes nothing again.
  rmSync(join(dir, '.anomaly_type'));
  await actions.reconcile(run, [stall], 1010).catch(() => undefined);
  assert.equal(undefined, read('.anomaly_type'));
});

test('an audit log that is a symlink to a JSON-lines file outside is never read: nothing of it reaches the status memory, and the run is still halted', async (t) => {
  const { d, run, dir, stats, read, actions } = setup();
  t.after(() => actions.close().then(() => d.cleanup()));
  const outside = join(d.path, 'secret.jsonl');
  const ep = { ts: 999, episode: 'outside-ep', kind: 'heartbeat_stall', source: 'embedded' };
  writeFileSync(
    outside,
    [
      { ...ep, event: 'anomaly', message: 'SECRET-OUTSIDE' },
      ...['anomaly_type', 'details', 'halt'].map((action) => ({ ...ep, event: 'action', action, result: 'ok' })),
    ]
      .map((e) => JSON.stringify(e))
      .join('\n') + '\n',
  );
  symlinkSync(outside, join(dir, '.trainwatch-audit.jsonl'));
  await actions.reconcile(run, [stall], 1000).catch(() => undefined);
  assert.equal('halt: heartbeat_stall\n', read('.HALT'));
  assert.equal(false, JSON.stringify(actions.recent(run.real)).includes('SECRET-OUTSIDE'));
  assert.equal(1, stats.auditErrors.read_refused);
});

test(
  'a run directory exchanged with a symlink to an outside directory in a loop while episodes act: nothing lands outside and no temp file is left anywhere',
  { timeout: 60_000 },
  async (t) => {
    const { d, run, dir, stats } = setup();
    const outside = join(d.path, 'outside');
    const swap = join(d.path, 'swap');
    mkdirSync(outside);
    symlinkSync(outside, swap);
    const stop = join(d.path, 'stop');
    // renameat2(RENAME_EXCHANGE): the run dir and the symlink trade names atomically, again and again.
    const py = `
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
a, b, stop = (p.encode() for p in sys.argv[1:4])
n = 0
while n < 20_000_000 and not os.path.exists(stop):
    if libc.renameat2(-100, a, -100, b, 2) != 0:
        sys.exit('renameat2: ' + os.strerror(ctypes.get_errno()))
    n += 1
if os.path.islink(a):
    libc.renameat2(-100, a, -100, b, 2)
print(n)
`;
    const swapper = spawn('python3', ['-c', py, dir, swap, stop], { stdio: ['ignore', 'pipe', 'inherit'] });
    let swaps = '';
    swapper.stdout.on('data', (b) => (swaps += b));
    const exited = new Promise((r) => swapper.once('exit', r));
    t.after(() => swapper.kill());
    const actions = new Actions({ halt: true, by: 'test', escalateS: 0, escalateTermS: 0, escalateKillS: 0, autoClearHalt: false, log: quiet, stats });
    t.after(() => actions.close().then(() => d.cleanup()));
    let ok = 0;
    let refused = 0;
    // Each new episode writes .anomaly_type and .anomaly.json and stages a .HALT (linked once, then
    // found). Until both outcomes were seen many times: the exchanges raced the writes, however the
    // two processes are scheduled.
    for (let i = 0; ok < 50 || refused < 50; i++) {
      assert.equal(true, i < 20_000 && swapper.exitCode === null, `the exchanges raced the writes (${ok} completed, ${refused} refused)`);
      try {
        await actions.reconcile(run, i % 2 === 0 ? [stall] : [], 1000 + i);
        ok++;
      } catch {
        refused++;
      }
    }
    writeFileSync(stop, '');
    await exited;
    t.diagnostic(`${swaps.trim()} exchanges; ${ok} evaluations completed, ${refused} refused`);
    assert.equal(true, lstatSync(dir).isDirectory(), 'the run dir is back in place');
    assert.deepEqual([], readdirSync(outside));
    const leaked = [...readdirSync(dir), ...readdirSync(d.path)].filter((n) => n.includes('.tmp-'));
    assert.deepEqual([], leaked);
  },
);

test(
  'a rotated audit log carries the open episode, its done actions and the halt record in its checkpoint: after a restart nothing is redone and escalation still follows',
  { timeout: 60_000 },
  async (t) => {
    const { d, run, stats, dir, audit } = setup();
    const mk = () => new Actions({ halt: true, by: 'test', escalateS: 60, escalateTermS: 0, escalateKillS: 0, autoClearHalt: false, log: quiet, stats });
    const first = mk();
    t.after(() => first.close().then(() => d.cleanup()));
    await first.reconcile(run, [stall], 1000);
    // Webhook episodes whose `anomaly` entries carry 64 KiB messages, until the log rotates.
    const message = 'x'.repeat(64 << 10);
    for (let i = 0; !existsSync(join(dir, '.trainwatch-audit.jsonl.1')); i++) {
      assert.equal(true, i < 1000, 'the log rotated');
      const a = { key: `fp${i}@t`, kind: 'fetch_stall', halts: false, message };
      await first.alerts(run, [{ ...a, status: 'firing' }], 1001);
      await first.alerts(run, [{ ...a, status: 'resolved' }], 1001);
    }
    assert.equal(1, stats.auditRotations);
    assert.equal('checkpoint', audit()[0].event);
    rmSync(join(dir, '.anomaly_type'));
    const again = mk();
    t.after(() => again.close());
    const procs = [{ pid: 2 ** 22 + 17, verify: () => false, fact: 'alive' as const }]; // above pid_max: not the trainer, whatever it claims
    await again.reconcile({ ...run, halted: true }, [stall], 1100, procs);
    assert.equal(false, existsSync(join(dir, '.anomaly_type')), 'the open episode continued: nothing rewritten');
    assert.deepEqual(
      [],
      audit().filter((e) => e.event === 'anomaly' && e.kind === 'heartbeat_stall'),
    );
    assert.equal('unverified', audit().find((e) => e.action === `sigusr1:${procs[0].pid}`)?.result);
  },
);

test('.anomaly.json holds exactly the keys docs/detection.md lists for it', async () => {
  const { d, run, actions, read } = setup();
  await actions.reconcile(run, [stall], 1000);
  const written = Object.keys(JSON.parse(read('.anomaly.json')!) as Record<string, unknown>).sort();
  const doc = readFileSync(join(REPO, 'docs/detection.md'), 'utf8');
  const para = /`\.anomaly\.json` holds\s([\s\S]*?); the numbers/.exec(doc);
  assert.ok(para, 'docs/detection.md: the sentence "`.anomaly.json` holds …; the numbers …" is gone');
  const documented = [...para[1].matchAll(/`([a-z_]+)`/g)]
    .map((m) => m[1])
    .filter((k) => !['embedded', 'alertmanager'].includes(k))
    .sort();
  assert.deepEqual(documented, written);
  d.cleanup();
});
