// Summarises a V8 .cpuprofile (from `node --cpu-prof`): self time per function, top N.
// Usage: node dist/bench/profsum.js <file.cpuprofile> [N] [filter-substring]
// Not a benchmark (scripts/bench.mjs skips it); used to find where a missed target's time goes.
import { readFileSync } from 'node:fs';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const [file, nArg, filter] = process.argv.slice(2);
if (!file) {
  process.stderr.write('usage: node dist/bench/profsum.js <file.cpuprofile> [N] [filter]\n');
  process.exit(2);
}
const prof = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const self = new Map<string, number>();
let total = 0;
for (let i = 0; i < prof.samples.length; i++) {
  const n = byId.get(prof.samples[i])!;
  const dt = prof.timeDeltas[i] ?? 0;
  total += dt;
  const f = n.callFrame;
  const where = f.url ? `${f.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${f.lineNumber + 1}` : '';
  const key = `${f.functionName || '(anonymous)'} ${where}`.trim();
  self.set(key, (self.get(key) ?? 0) + dt);
}
const rows = [...self.entries()].filter(([k]) => !filter || k.includes(filter)).sort((a, b) => b[1] - a[1]);
process.stdout.write(`total sampled ${(total / 1000).toFixed(0)} ms\n`);
for (const [k, us] of rows.slice(0, Number(nArg ?? 25))) {
  process.stdout.write(`${((100 * us) / total).toFixed(1).padStart(5)} %  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}\n`);
}
