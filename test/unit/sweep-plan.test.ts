// The sweep's budget with file events on: which runs each sweep visits (planSweep is pure).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planSweep, SWEEP_MIN_FILES, SWEEP_PASS, type SweepCandidate } from '../../src/watch/sweep-plan.js';

type R = SweepCandidate & { id: number };

/** Runs `sweeps` sweeps over `runs`, as the watcher does (visited runs get the sweep's number). */
function simulate(runs: R[], sweeps: number, onSweep: (visited: R[], seq: number) => void = () => undefined): void {
  const first = Math.max(0, ...runs.map((r) => r.sweptAt)) + 1;
  for (let seq = first; seq < first + sweeps; seq++) {
    const visited = planSweep(runs, (r) => r);
    for (const r of visited) r.sweptAt = seq;
    onSweep(visited, seq);
  }
}

const runsOf = (n: number, files: number, sweptAt = 0): R[] => Array.from({ length: n }, (_, id) => ({ id, files, sweptAt, due: false }));

test('up to 625 files, every sweep visits every run', () => {
  const runs = runsOf(78, 8); // 624 files
  simulate(runs, 3, (visited) => assert.equal(78, visited.length));
});

test('at 10,000 files a sweep visits 625 files and every run is visited within 16 sweeps', () => {
  const runs = runsOf(1250, 8);
  const gaps: number[] = [];
  const last = new Map<number, number>();
  simulate(runs, 64, (visited, seq) => {
    const files = visited.reduce((n, r) => n + r.files, 0);
    assert.equal(true, files >= SWEEP_MIN_FILES && files < SWEEP_MIN_FILES + 8, `sweep ${seq} visited ${files} files`);
    for (const r of visited) {
      if (last.has(r.id)) gaps.push(seq - last.get(r.id)!);
      last.set(r.id, seq);
    }
  });
  assert.equal(1250, last.size, 'every run was visited');
  assert.equal(SWEEP_PASS, Math.max(...gaps), 'the longest wait between two visits of a run, in sweeps');
});

test('beyond 10,000 files the budget grows, so that a pass still takes 16 sweeps', () => {
  const runs = runsOf(5000, 8); // 40,000 files: 2,500 a sweep
  const seen = new Set<number>();
  simulate(runs, SWEEP_PASS, (visited) => {
    assert.equal(Math.ceil(2500 / 8), visited.length);
    for (const r of visited) seen.add(r.id);
  });
  assert.equal(5000, seen.size);
});

test('runs never visited and due runs are visited at once, without starving the rest', () => {
  const runs = runsOf(1250, 8, 5);
  runs[700].sweptAt = -1; // just discovered
  for (let i = 0; i < 1000; i++) runs[i].due = i !== 700; // e.g. no watch could be set on them
  const seen = new Set<number>();
  simulate(runs, 1, (visited) => {
    for (const r of visited) seen.add(r.id);
  });
  for (let i = 0; i < 1000; i++) assert.equal(true, seen.has(i), `run ${i} visited`);
  // The budget still went to the others.
  assert.equal(1000 + Math.ceil(SWEEP_MIN_FILES / 8), seen.size);
});

test('a run with no files yet counts as one file, and a run bigger than the budget is still visited', () => {
  const runs: R[] = [
    { id: 0, files: 0, sweptAt: 3, due: false },
    { id: 1, files: 5000, sweptAt: 1, due: false },
    ...runsOf(10, 1, 2).map((r) => ({ ...r, id: r.id + 2 })),
  ];
  const visited = planSweep(runs, (r) => r);
  assert.deepEqual(
    [1],
    visited.map((r) => r.id),
    'the oldest run alone fills the budget',
  );
  simulate(runs, 2);
  assert.equal(
    true,
    runs.every((r) => r.sweptAt > 3),
    'every run visited within two sweeps',
  );
});
