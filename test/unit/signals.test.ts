// Escalation's proof of the writer against a fake /proc: start time and real uid both have to match.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { processUid, provenWriter, type ProcReader } from '../../src/actions/signals.js';

const BTIME = 1_700_000_000;
const BOOT_TS = BTIME + 1000; // the trainer's boot record, 1000 s after the host booted

/** A /proc with one process `pid` that started `startS` after boot and runs with real uid `uid` (effective uid 0). */
function fakeProc(pid: number, startS: number, uid: number): ProcReader {
  const files: Record<string, string> = {
    '/proc/stat': `cpu  1 2 3\nbtime ${BTIME}\nprocesses 9\n`,
    [`/proc/${pid}/stat`]: `${pid} (python3 (rank 0)) S 1 ${pid} ${pid} 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 ${startS * 100} 1000 100`,
    [`/proc/${pid}/status`]: `Name:\tpython3\nState:\tS (sleeping)\nPid:\t${pid}\nUid:\t${uid}\t0\t0\t0\nGid:\t${uid}\t${uid}\t${uid}\t${uid}\n`,
  };
  return (path) => {
    if (!(path in files)) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
    return files[path];
  };
}

const writer = { pid: 4242, sinceTs: BOOT_TS, bootTs: BOOT_TS };

test('a process that started as the writer and whose real uid owns the heartbeat file is proven', () => {
  assert.equal(true, provenWriter(writer, 1000, fakeProc(4242, 990, 1000)));
});

test('a process that started as the writer but runs as another user than the file owner is not proven (its effective uid does not count)', () => {
  assert.equal(false, provenWriter(writer, 1000, fakeProc(4242, 990, 1001)));
  assert.equal(false, provenWriter(writer, 0, fakeProc(4242, 990, 1001)), 'effective uid 0 does not make it the writer');
});

test('without an owner for the heartbeat file (gone, or not a regular file) no process is proven', () => {
  assert.equal(false, provenWriter(writer, undefined, fakeProc(4242, 990, 1000)));
});

test('a process of the right user that started after the first record (a recycled pid) is not proven', () => {
  assert.equal(false, provenWriter(writer, 1000, fakeProc(4242, 1100, 1000)));
});

test('a pid with no process, or a status without a Uid line, proves nothing', () => {
  assert.equal(false, provenWriter({ ...writer, pid: 7 }, 1000, fakeProc(4242, 990, 1000)));
  assert.equal(
    undefined,
    processUid(4242, () => 'Name:\tx\n'),
  );
  assert.equal(1000, processUid(4242, fakeProc(4242, 990, 1000)));
});
