// Basic auth's bcrypt thread: the verdicts it gives, the same after close() (on the main
// thread then), and a process that used it still exits on its own (the thread is unref'd).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import bcrypt from 'bcryptjs';
import { BasicAuth, BcryptThread } from '../../src/http/webconfig.js';
import { REPO } from '../helpers/proc.js';

const basic = (user: string, pw: string) => 'Basic ' + Buffer.from(`${user}:${pw}`).toString('base64');

test('the bcrypt thread compares and hashes as bcryptjs does, and after close() still answers (on the main thread)', async () => {
  const thread = new BcryptThread();
  const hash = bcrypt.hashSync('right', 4);
  assert.deepEqual([true, false], [await thread.compare('right', hash), await thread.compare('wrong', hash)]);
  const made = await thread.hash('decoy', 5);
  assert.equal(5, bcrypt.getRounds(made));
  assert.equal(true, bcrypt.compareSync('decoy', made));
  await thread.close();
  assert.deepEqual([true, false], [await thread.compare('right', hash), await thread.compare('wrong', hash)]);
});

test('basic auth through the thread: the right password, a wrong one, and an unknown user (against the decoy hash)', async (t) => {
  const auth = new BasicAuth(new Map([['prometheus', bcrypt.hashSync('right', 4)]]));
  t.after(() => auth.close());
  assert.deepEqual(
    ['ok', 'wrong', 'wrong'],
    [await auth.check(basic('prometheus', 'right')), await auth.check(basic('prometheus', 'nope')), await auth.check(basic('nobody', 'right'))],
  );
});

test('a process whose basic auth used the thread and never closed it exits on its own', () => {
  const code = `
    import('${REPO}/dist/src/http/webconfig.js').then(async ({ BasicAuth }) => {
      const bcrypt = (await import('bcryptjs')).default;
      const auth = new BasicAuth(new Map([['u', bcrypt.hashSync('p', 4)]]));
      console.log(await auth.check('Basic ' + Buffer.from('u:p').toString('base64')));
    });`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: REPO, encoding: 'utf8', timeout: 30_000 });
  assert.equal(null, r.signal, 'killed by the time-out: the thread kept the process alive');
  assert.equal(0, r.status, r.stderr);
  assert.equal('ok', r.stdout.trim());
});
