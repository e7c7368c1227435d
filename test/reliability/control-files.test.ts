// Control files and the audit log on the real process, against run directories that are hostile
// or broken: FIFOs and unreadable audit logs, a full disk, an audit log grown past its rotation
// size. In each, the runs must still be halted and the process must keep serving.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chownSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoForAnyUser, requireBinary, scrape, waitFor } from '../helpers/proc.js';
import { assertServing, record, scratch, startTw } from '../helpers/reliability.js';

const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];
const AUDIT = '.trainwatch-audit.jsonl';

/** A run directory whose rank 0 has just reported a NaN loss (a halting anomaly). */
function nanRun(base: string, name: string): string {
  const dir = join(base, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'heartbeat_rank0.jsonl'), record(0, 1) + record(0, 2, 'progress', { loss: NaN }));
  return dir;
}

const auditErrors = (m: Map<string, number>, reason: string) => m.get(`trainwatch_audit_errors_total{reason="${reason}"}`) ?? 0;

describe('control files and the audit log', { concurrency: 1 }, () => {
  test(
    'fifo_audit_log: FIFOs named .trainwatch-audit.jsonl in four run dirs block neither startup nor a gzip /metrics, and every run is halted',
    { timeout: 60_000 },
    async (t) => {
      const base = scratch(t);
      const fifos = [0, 1, 2, 3].map((i) => nanRun(base, `fifo${i}`));
      for (const dir of fifos) spawnSync('mkfifo', [join(dir, AUDIT)]);
      const control = nanRun(base, 'control');
      const tw = await startTw(t, ['--root', base, '--halt', '1']);
      await waitFor(() => [control, ...fifos].every((dir) => existsSync(join(dir, '.HALT'))), 'every run halted');
      assert.equal('halt: nonfinite_loss\n', readFileSync(join(control, '.HALT'), 'utf8'));
      const gz = await fetch(`${tw.url}/metrics`, { headers: { 'accept-encoding': 'gzip' } });
      assert.equal(200, gz.status);
      await gz.arrayBuffer(); // the answer arriving whole is the point: 4 FIFOs must not exhaust the thread pool
      const m = await scrape(tw.url);
      assert.equal(4, auditErrors(m, 'read_refused'));
      assert.equal(true, auditErrors(m, 'append_failed') >= 4);
      for (const dir of fifos) assert.equal(true, statSync(join(dir, AUDIT)).isFIFO(), 'the FIFO is left alone');
      assert.match(tw.logs(), /cannot read the audit log.*not a regular file; move it away/);
      await assertServing(tw);
    },
  );

  test(
    'unreadable_audit_log: trainwatch as nobody halts a run whose audit log it may not read or append to, logs the fix and counts both',
    { timeout: 60_000 },
    async (t) => {
      const setpriv = requireBinary('setpriv', 'util-linux');
      const base = scratch(t);
      const dir = nanRun(base, 'locked-audit');
      chownSync(dir, 65534, 65534);
      writeFileSync(join(dir, AUDIT), '{"ts":1,"event":"resolved","episode":"x"}\n', { mode: 0o600 });
      const tw = await startTw(t, ['--root', base, '--halt', '1'], { wrap: [setpriv, ...NOBODY], repo: repoForAnyUser() });
      await waitFor(() => existsSync(join(dir, '.HALT')), '.HALT despite the unreadable audit log');
      assert.equal('nonfinite_loss\n', readFileSync(join(dir, '.anomaly_type'), 'utf8'));
      const m = await scrape(tw.url);
      assert.equal(1, auditErrors(m, 'read_failed'));
      assert.equal(true, auditErrors(m, 'append_failed') >= 1);
      assert.match(tw.logs(), /cannot read the audit log.*permission denied: make it readable and writable by uid 65534/);
      await assertServing(tw);
    },
  );

  test(
    'full_disk: on a full tmpfs .HALT is still created (empty), counted as ok_empty, while the failed writes are counted',
    { timeout: 60_000 },
    async (t) => {
      const mnt = mkdtempSync(join(tmpdir(), 'tw-full-'));
      const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt], { encoding: 'utf8' });
      assert.equal(0, mount.status, `mounting a 64 KiB tmpfs needs root (CAP_SYS_ADMIN): ${mount.stderr}`);
      t.after(() => {
        spawnSync('umount', ['-l', mnt]);
        rmSync(mnt, { recursive: true, force: true });
      });
      const dir = nanRun(mnt, 'full');
      // Fill every block: a page at a time until the filesystem says no.
      const fd = openSync(join(mnt, 'filler'), 'w');
      const page = Buffer.alloc(4096, 1);
      for (;;) {
        try {
          writeSync(fd, page);
        } catch (e) {
          assert.equal('ENOSPC', (e as NodeJS.ErrnoException).code);
          break;
        }
      }
      closeSync(fd);
      const tw = await startTw(t, ['--root', mnt, '--halt', '1']);
      await waitFor(() => existsSync(join(dir, '.HALT')), '.HALT on the full disk');
      assert.equal(0, statSync(join(dir, '.HALT')).size);
      const m = await scrape(tw.url);
      assert.equal(1, m.get('trainwatch_actions_total{action="halt",result="ok_empty"}'));
      assert.equal(true, (m.get('trainwatch_actions_total{action="anomaly_type",result="failed"}') ?? 0) >= 1);
      assert.equal(true, auditErrors(m, 'append_failed') >= 1);
      assert.match(tw.logs(), /the disk is full: free space; trainwatch retries/);
      await assertServing(tw);
    },
  );

  test(
    'audit_rotation: an audit log filled past 4 MiB through the real webhook rotates with a checkpoint, and after a restart an alert acted on before the rotation is still a duplicate',
    { timeout: 120_000 },
    async (t) => {
      const base = scratch(t);
      const dir = join(base, 'exp1');
      mkdirSync(dir);
      writeFileSync(join(dir, 'heartbeat_rank0.jsonl'), record(0, 1));
      const args = ['--root', base, '--mode', 'alertmanager', '--halt', '1', '--webhook.allow-unauthenticated'];
      let tw = await startTw(t, args);
      const kinds = [
        'heartbeat_stall',
        'throughput_flatline',
        'loss_flatline',
        'zero_grad',
        'fetch_stall',
        'gate_collapse',
        'nonfinite_loss',
        'straggler',
        'trainer_crash',
      ];
      const alert = (fingerprint: string, kind: string, status: string, description = 'stalled') => ({
        status,
        labels: { alertname: 'X', run: 'exp1', rank: '0', anomaly_type: kind, halt: 'false' },
        annotations: { description },
        startsAt: '2026-11-28T10:00:00Z',
        endsAt: '0001-01-01T00:00:00Z',
        generatorURL: 'http://prom',
        fingerprint,
      });
      const post = async (alerts: unknown[]) => {
        const res = await fetch(`${tw.url}/webhook/alertmanager`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            version: '4',
            status: 'firing',
            receiver: 'tw',
            groupLabels: {},
            commonLabels: {},
            commonAnnotations: {},
            externalURL: 'http://am',
            alerts,
          }),
        });
        assert.equal(200, res.status);
        return ((await res.json()) as { alerts: Array<{ result: string }> }).alerts.map((a) => a.result);
      };
      // The alert that must be remembered: acted on, then resolved, before anything else.
      assert.deepEqual(['acted'], await post([alert('old', 'heartbeat_stall', 'firing')]));
      assert.deepEqual(['resolved'], await post([alert('old', 'heartbeat_stall', 'resolved')]));
      // Episodes with long descriptions (each `anomaly` entry carries one): ~16 KiB per episode,
      // so few keys (fewer than the checkpoint keeps) fill the log past its rotation size.
      const long = 'x'.repeat(16 << 10);
      for (let round = 0; round < 36; round++) {
        const fps = kinds.map((k) => `r${round}-${k}`);
        assert.deepEqual(
          kinds.map(() => 'acted'),
          await post(kinds.map((k, i) => alert(fps[i], k, 'firing', long))),
        );
        assert.deepEqual(
          kinds.map(() => 'resolved'),
          await post(kinds.map((k, i) => alert(fps[i], k, 'resolved'))),
        );
      }
      const m = await scrape(tw.url);
      assert.equal(1, m.get('trainwatch_audit_rotations_total'));
      assert.equal(true, existsSync(join(dir, `${AUDIT}.1`)));
      const lines = readFileSync(join(dir, AUDIT), 'utf8').trim().split('\n');
      const head = JSON.parse(lines[0]) as { event: string; state: { keys: string[] } };
      assert.equal('checkpoint', head.event);
      assert.equal(true, head.state.keys.includes('old@2026-11-28T10:00:00Z'));
      assert.equal(
        false,
        lines.slice(1).some((l) => l.includes('"old@')),
        'the old alert is only in the checkpoint of the current log',
      );
      assert.equal(true, readFileSync(join(dir, `${AUDIT}.1`), 'utf8').includes('"key":"old@'));
      await tw.stop();
      tw = await startTw(t, args);
      assert.deepEqual(['duplicate'], await post([alert('old', 'heartbeat_stall', 'firing')]));
      await assertServing(tw);
    },
  );
});
