// The real ingest pipeline in-process, shared by the ingest and mtail benchmarks:
// FileTail (1 MiB reads, line splitting) → HeartbeatSink (utf8 check, parseLine, reduce)
// into a real watcher Run, exactly as the watcher wires them for a newly appeared file.
import { defaultConfig } from '../src/config/settings.js';
import { FileTail } from '../src/source/tail.js';
import { ParsePool } from '../src/watch/parse-pool.js';
import { HeartbeatSink } from '../src/watch/sinks.js';
import { Stats } from '../src/watch/stats.js';
import { Run } from '../src/watch/watcher.js';

/** One pass of the real pipeline over `path`; returns lines and seconds. With `pool`, big reads are also parsed on its thread, as the watcher does by default (tail.parse-thread-bytes). */
export async function pipelinePass(
  path: string,
  pool?: ParsePool,
): Promise<{ lines: number; s: number; parseErrors: number; progress: number; lastStep: number | undefined }> {
  const config = defaultConfig();
  const run = new Run('bench', '/nonexistent', '/nonexistent', () => undefined);
  const stats = new Stats();
  const sink = new HeartbeatSink(run, stats, undefined, pool && { pool, minBytes: config['tail.parse-thread-bytes'] });
  // A file that appears while trainwatch runs is read from offset 0: the whole file.
  const tail = new FileTail(path, sink, { maxLineBytes: config['tail.max-line-bytes'], startupBytes: config['tail.startup-bytes'], startAtEnd: false });
  const t0 = performance.now();
  await tail.poll();
  const s = (performance.now() - t0) / 1000;
  await tail.close();
  const errors = Object.values(stats.parseErrors).reduce((a, b) => a + b, 0);
  return { lines: stats.linesRead, s, parseErrors: errors, progress: run.ranks.get(0)?.records.progress ?? 0, lastStep: run.ranks.get(0)?.step };
}
