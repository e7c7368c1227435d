// Escalation's proof of the writer: against a fake /proc, start time, real uid and a cwd or open
// file inside the run directory all have to match; against the real /proc, python3 processes with
// their cwd or an open file inside a run directory, or neither.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { holdsInto, MAX_FDS_EXAMINED, processUid, provenWriter, type ProcLinks, type ProcReader } from '../../src/actions/signals.js';
import { repoForAnyUser, requireBinary, tmpDir } from '../helpers/proc.js';

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
const RUN = '/data/runs/r1';

/** /proc/<pid>/cwd and /proc/<pid>/fd/* of one process; `deny` makes both refuse (EACCES). */
function fakeLinks(pid: number, cwd: string, fds: string[], deny = false): ProcLinks & { listed: number } {
  const refuse = () => {
    throw Object.assign(new Error('EACCES'), { code: 'EACCES' });
  };
  const out = {
    listed: 0,
    list(dir: string, max: number) {
      if (deny) refuse();
      if (dir !== `/proc/${pid}/fd`) throw Object.assign(new Error(`ENOENT: ${dir}`), { code: 'ENOENT' });
      const names = fds.map((_, i) => String(i)).slice(0, max);
      out.listed = names.length;
      return names;
    },
    link(path: string) {
      if (deny) refuse();
      if (path === `/proc/${pid}/cwd`) return cwd;
      const m = new RegExp(`^/proc/${pid}/fd/(\\d+)$`).exec(path);
      if (m && Number(m[1]) < fds.length) return fds[Number(m[1])];
      throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
    },
  };
  return out;
}
const inRun = fakeLinks(4242, RUN, []);

test('a process that started as the writer, whose real uid owns the heartbeat file and whose cwd is the run directory is proven', () => {
  assert.equal('proven', provenWriter(writer, 1000, RUN, fakeProc(4242, 990, 1000), inRun));
});

test('a process that started as the writer but runs as another user than the file owner is not proven (its effective uid does not count)', () => {
  assert.equal('uid', provenWriter(writer, 1000, RUN, fakeProc(4242, 990, 1001), inRun));
  assert.equal('uid', provenWriter(writer, 0, RUN, fakeProc(4242, 990, 1001), inRun), 'effective uid 0 does not make it the writer');
});

test('without an owner for the heartbeat file (gone, or not a regular file) no process is proven', () => {
  assert.equal('uid', provenWriter(writer, undefined, RUN, fakeProc(4242, 990, 1000), inRun));
});

test('a process of the right user that started after the first record (a recycled pid) is not proven', () => {
  assert.equal('start_time', provenWriter(writer, 1000, RUN, fakeProc(4242, 1100, 1000), inRun));
});

test('a pid with no process, or a status without a Uid line, proves nothing', () => {
  assert.equal('start_time', provenWriter({ ...writer, pid: 7 }, 1000, RUN, fakeProc(4242, 990, 1000), inRun));
  assert.equal(
    undefined,
    processUid(4242, () => 'Name:\tx\n'),
  );
  assert.equal(1000, processUid(4242, fakeProc(4242, 990, 1000)));
});

test("a process of the writer's user and start whose cwd is elsewhere is proven by an open file in the run directory, the heartbeat file or one below it", () => {
  const proc = fakeProc(4242, 990, 1000);
  const devices = ['/dev/null', '/dev/nvidia0', 'socket:[123]', 'anon_inode:[eventpoll]'];
  assert.equal('proven', provenWriter(writer, 1000, RUN, proc, fakeLinks(4242, '/home/u/nsa', [...devices, `${RUN}/heartbeat_rank0.jsonl`])));
  assert.equal('proven', provenWriter(writer, 1000, RUN, proc, fakeLinks(4242, '/home/u/nsa', [...devices, `${RUN}/tb/events.out.tfevents.1`])));
  assert.equal('proven', provenWriter(writer, 1000, RUN, proc, fakeLinks(4242, `${RUN}/tb`, devices)));
});

test("a process whose cwd contains the run directory (the trainer's checkout, with out_dir below it) is proven; '/' proves nothing", () => {
  const proc = fakeProc(4242, 990, 1000);
  assert.equal('proven', provenWriter(writer, 1000, RUN, proc, fakeLinks(4242, '/data', ['/dev/null'])));
  assert.equal('proven', provenWriter(writer, 1000, RUN, proc, fakeLinks(4242, '/data/runs', ['/dev/null'])));
  assert.equal('not_in_run', provenWriter(writer, 1000, RUN, proc, fakeLinks(4242, '/', ['/dev/null'])));
  assert.equal('not_in_run', provenWriter(writer, 1000, RUN, proc, fakeLinks(4242, '/data/run', ['/dev/null'])), 'a prefix that is not a parent');
});

test('a process with neither its cwd nor an open file in the run directory is not proven, a sibling directory with the same prefix included', () => {
  const proc = fakeProc(4242, 990, 1000);
  assert.equal('not_in_run', provenWriter(writer, 1000, RUN, proc, fakeLinks(4242, '/home/u/nsa', ['/dev/null', `${RUN}2/heartbeat_rank0.jsonl`])));
  assert.equal('not_in_run', provenWriter(writer, 1000, RUN, proc, fakeLinks(4242, `${RUN}-old`, ['/data/runs'])));
});

test('when /proc refuses the cwd and descriptors (another user, no CAP_SYS_PTRACE) the proof fails closed', () => {
  assert.equal('proc_unreadable', provenWriter(writer, 1000, RUN, fakeProc(4242, 990, 1000), fakeLinks(4242, RUN, [], true)));
});

test('at most MAX_FDS_EXAMINED descriptors are looked at: a run file past them does not prove the writer', () => {
  const many = Array.from({ length: MAX_FDS_EXAMINED }, () => '/dev/null');
  const links = fakeLinks(4242, '/', [...many, `${RUN}/heartbeat_rank0.jsonl`]);
  assert.equal('no', holdsInto(4242, RUN, links));
  assert.equal(MAX_FDS_EXAMINED, links.listed);
  assert.equal('yes', holdsInto(4242, RUN, fakeLinks(4242, '/', [...many.slice(1), `${RUN}/heartbeat_rank0.jsonl`])));
});

/** A python3 process in `cwd` that holds `open` open (if given) until killed; resolves once it has. */
async function holder(cwd: string, open?: string): Promise<ChildProcess> {
  const py = 'import sys\nf = open(sys.argv[1], "a") if sys.argv[1] else None\nprint("ready", flush=True)\nsys.stdin.read()';
  const p = spawn('python3', ['-c', py, open ?? ''], { cwd, stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    p.stdout.once('data', () => resolve());
    p.once('exit', (code) => reject(new Error(`python3 exited with ${code}`)));
  });
  return p;
}

test("real processes: cwd in the run directory is proven, cwd elsewhere with the heartbeat file open is proven, cwd elsewhere with nothing open there is not, cwd in the run's parent is", async (t) => {
  requireBinary('python3', 'python3');
  const d = tmpDir('tw-proof-');
  const run = join(realpathSync(d.path), 'run');
  const elsewhere = join(realpathSync(d.path), 'elsewhere');
  mkdirSync(run);
  mkdirSync(elsewhere);
  const hb = join(run, 'heartbeat_rank0.jsonl');
  writeFileSync(hb, '');
  const procs = [await holder(run), await holder(elsewhere, hb), await holder(elsewhere), await holder(realpathSync(d.path))];
  t.after(() => {
    for (const p of procs) p.kill('SIGKILL');
    d.cleanup();
  });
  // Records that name each process: its boot record just after it started, as a trainer's is.
  const facts = (p: ChildProcess) => ({ pid: p.pid!, sinceTs: Date.now() / 1000, bootTs: Date.now() / 1000 });
  const uid = process.getuid!();
  assert.deepEqual(
    ['proven', 'proven', 'not_in_run', 'proven'],
    procs.map((p) => provenWriter(facts(p), uid, run)),
  );
  assert.equal('uid', provenWriter(facts(procs[0]), uid + 1, run), 'the file of another owner');
});

test('a real process of another user whose /proc entries are refused to an unprivileged reader is unreadable: the proof fails closed', (t) => {
  const setpriv = requireBinary('setpriv', 'util-linux');
  if (process.getuid!() !== 0) return t.skip('needs root to run the reader as another user');
  const target = spawn('sleep', ['600'], { cwd: '/', stdio: 'ignore' });
  t.after(() => target.kill('SIGKILL'));
  // The reader: node as nobody, without capabilities, running holdsInto on root's process.
  const code = `import('${repoForAnyUser()}/dist/src/actions/signals.js').then((m) => console.log(m.holdsInto(${target.pid}, '/')))`;
  const r = spawnSync(setpriv, ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', process.execPath, '-e', code], {
    encoding: 'utf8',
  });
  assert.equal(0, r.status, r.stderr);
  assert.equal('unreadable', r.stdout.trim());
  assert.equal('yes', holdsInto(target.pid!, '/'), 'root sees it');
});
