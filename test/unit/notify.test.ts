import { test } from 'node:test';
import assert from 'node:assert/strict';
import { noticeEnv, splitCommand, webhookBody, type Notice } from '../../src/notify/notify.js';

const notice: Notice = {
  event: 'opened',
  run: 'r',
  dir: '/d/r',
  kind: 'zero_grad',
  rank: 0,
  message: 'grad_norm == 0',
  severity: 'critical',
  halted: true,
  state: 'halt_requested',
  episode: 'e1',
  ts: 1,
  host: 'h',
};

test('a --notify.exec line is split into words like a shell would, without running one', () => {
  assert.deepEqual(['/bin/hook', 'a b', 'c"d', "e'f", 'g h', '$HOME', ''], splitCommand(`/bin/hook 'a b' "c\\"d" "e'f" g\\ h $HOME ''`));
  assert.throws(() => splitCommand(`hook 'open`), /--notify.exec: unterminated ' quote/);
});

test('the command environment carries every documented variable', () => {
  assert.deepEqual(
    {
      TRAINWATCH_EVENT: 'opened',
      TRAINWATCH_RUN: 'r',
      TRAINWATCH_DIR: '/d/r',
      TRAINWATCH_KIND: 'zero_grad',
      TRAINWATCH_RANK: '0',
      TRAINWATCH_MESSAGE: 'grad_norm == 0',
      TRAINWATCH_SEVERITY: 'critical',
      TRAINWATCH_HALTED: '1',
      TRAINWATCH_STATE: 'halt_requested',
      TRAINWATCH_EPISODE: 'e1',
    },
    noticeEnv(notice),
  );
});

test('the slack webhook format is one text line with the kind, run, rank, message and halt', () => {
  assert.deepEqual(
    { text: ':rotating_light: zero_grad on run r rank 0 (h): grad_norm == 0 — .HALT written [halt_requested]' },
    JSON.parse(webhookBody(notice, 'slack')),
  );
  assert.equal(1, (JSON.parse(webhookBody(notice, 'json')) as { version: number }).version);
});
