// Sinks: complete lines from a FileTail → parsed records → run state.
import { outcomeAt, parseColumns, type LineColumns } from '../parse/columns.js';
import { DEFAULT_CSV_LAYOUT, parseCsvLine, type CsvLayout } from '../parse/csv.js';
import { parseHeartbeatLine, type HeartbeatRecord, type LineOutcome, type ParseErrorReason } from '../parse/line.js';
import { newRankState, reduce, type RankState, type ReduceParams } from '../state/rank.js';
import { newCsvState, reduceCsv, type CsvState } from '../state/run.js';
import type { TailErrorReason, TailSink } from '../source/tail.js';
import { admitRank } from '../parse/rank-cap.js';
import type { ParsePool } from './parse-pool.js';
import type { Stats } from './stats.js';

/** What a sink writes into: the ranks of one run. */
export interface RankTable {
  ranks: Map<number, RankState>;
  csv?: CsvState;
  /** called after a batch of new lines changed the run */
  touched(): void;
  /** how single records are classified (the run's profile) */
  readonly params: ReduceParams;
}

/** What every sink does with the tail's errors and byte counts. */
abstract class CountingSink implements TailSink {
  constructor(
    protected readonly stats: Stats,
    /** told about each distinct read failure (the tail reports one per failure, not one per poll) */
    private readonly onReadError?: (detail: string, reason: string) => void,
  ) {}

  abstract reset(): void;
  abstract line(buf: Buffer, start: number, end: number): void;
  abstract wantsMoreHistory(): boolean;

  error(reason: TailErrorReason, detail?: string): void {
    this.stats.parseErrors[reason]++;
    // Counted always; logged (once per distinct failure, the tail de-duplicates) where a person can act.
    if (
      reason === 'read_error' ||
      reason === 'not_regular_file' ||
      reason === 'copytruncate_lost' ||
      (reason === 'sparse_skip' && detail?.includes('skipped a hole'))
    )
      this.onReadError?.(detail ?? reason, reason);
  }

  bytes(n: number): void {
    this.stats.bytesRead += n;
  }
}

/** Parsing big reads on a second thread (see parse-pool.ts). */
export interface ParallelParse {
  pool: ParsePool;
  /** reads of at least this many bytes use the thread */
  minBytes: number;
}

/** Lines of a batched read, in file order: parsed here, or bytes on their way to the parse thread. */
type ThreadBatch = { columns?: LineColumns; pending: boolean };
type Batch = { outcomes: LineOutcome[] } | ThreadBatch;

/** Bytes of lines per batch; batches alternate between this thread and the parse thread. */
const BATCH_BYTES = 256 << 10;
/** After a chunk, the tail waits while more than this many batches are on the parse thread (bounds memory). */
const MAX_IN_FLIGHT = 2;

/** Feeds one heartbeat file into the run's rank table. */
export class HeartbeatSink extends CountingSink {
  /** ranks this file has contributed (a legacy heartbeat.jsonl holds several) */
  private readonly mine = new Set<number>();

  /** The ranks this file has contributed. */
  ranksRead(): number[] {
    return [...this.mine];
  }
  /** progress records per rank since the last reset, to tell an unbroken streak */
  private readonly progressSeen = new Map<number, number>();
  private livenessSeen = false;
  // Batching of a big read: lines are parsed in batches, every other one on the parse thread,
  // and applied strictly in file order as each batch at the head of the queue is ready.
  private batching = false;
  private readonly queue: Batch[] = [];
  private inFlight = 0;
  /** the batch being filled: parsed here (outcomes) or regions of bytes for the thread */
  private here: LineOutcome[] | undefined;
  private regions: Array<[Buffer, number, number]> = [];
  private filled = 0;
  private toThread = false;
  /** settle() calls waiting for the parse thread's next answer */
  private waiters: Array<() => void> = [];
  /** an exception from applying a thread batch, rethrown by settle() to the tail's caller */
  private failure: unknown;

  constructor(
    private readonly table: RankTable,
    stats: Stats,
    onReadError?: (detail: string, reason: string) => void,
    private readonly parallel?: ParallelParse,
    /** run.max-ranks: records of ranks past it are counted and dropped (a hostile file of 20k ranks) */
    private readonly maxRanks = Infinity,
    /** told once when the cap first bites */
    private readonly onRankCap?: () => void,
  ) {
    super(stats, onReadError);
  }

  reset(): void {
    // Queued lines belong to the window being forgotten (the tail settles before a reset, so
    // this is a safety net). Batches still on the thread find no queue entry when they return.
    this.queue.length = 0;
    this.here = undefined;
    this.regions = [];
    this.filled = 0;
    this.toThread = false;
    for (const r of this.mine) this.table.ranks.delete(r);
    this.mine.clear();
    this.progressSeen.clear();
    this.livenessSeen = false;
  }

  willRead(bytes: number): void {
    const p = this.parallel;
    this.batching = p !== undefined && p.minBytes > 0 && bytes >= p.minBytes && p.pool.usable;
  }

  line(buf: Buffer, start: number, end: number): void {
    this.stats.linesRead++;
    if (!this.batching) {
      this.applyOutcome(parseHeartbeatLine(buf, start, end));
      this.table.touched();
      return;
    }
    if (this.toThread) {
      // Consecutive lines of one read buffer are one region: one copy per region, not per line.
      const last = this.regions[this.regions.length - 1];
      if (last && last[0] === buf && last[2] + 1 === start) last[2] = end;
      else this.regions.push([buf, start, end]);
    } else {
      (this.here ??= []).push(parseHeartbeatLine(buf, start, end));
    }
    this.filled += end - start + 1;
    if (this.filled >= BATCH_BYTES) this.endBatch();
  }

  /** Called by the tail after each chunk (final: false) and at the end of a read (final: true). */
  async settle(final: boolean): Promise<void> {
    if (!this.batching) return;
    if (final) {
      this.endBatch();
      this.batching = false;
      while (this.queue.length > 0 && this.inFlight > 0) await this.next();
    } else {
      while (this.inFlight > MAX_IN_FLIGHT) await this.next();
    }
    if (this.failure !== undefined) {
      // As before batching, a line that cannot be applied ends the read; what is queued behind it goes too.
      const e = this.failure;
      this.failure = undefined;
      this.queue.length = 0;
      throw e;
    }
  }

  private endBatch(): void {
    if (this.toThread && this.regions.length > 0) {
      const bytes = gather(this.regions);
      const batch: ThreadBatch = { pending: true };
      this.inFlight++;
      this.queue.push(batch);
      // The pool transfers (detaches) `bytes`; the regions still point into the read buffers,
      // which are never reused, so the fallback can gather the same bytes again.
      const regions = this.regions;
      this.parallel!.pool.parse(bytes).then(
        (columns) => this.done(batch, columns),
        () => this.done(batch, parseColumns(gather(regions))), // the thread failed: parse here
      );
    } else if (!this.toThread && this.here) {
      this.queue.push({ outcomes: this.here });
    }
    this.here = undefined;
    this.regions = [];
    this.filled = 0;
    this.toThread = !this.toThread;
    this.drain();
  }

  private done(batch: ThreadBatch, columns: LineColumns): void {
    batch.columns = columns;
    batch.pending = false;
    this.inFlight--;
    try {
      this.drain();
    } catch (e) {
      this.failure ??= e; // for settle() to rethrow; never an unhandled rejection
    } finally {
      const ws = this.waiters;
      this.waiters = [];
      for (const w of ws) w();
    }
  }

  /** Applies every ready batch at the head of the queue. */
  private drain(): void {
    while (this.queue.length > 0) {
      const b = this.queue[0];
      if ('pending' in b && b.pending) return;
      this.queue.shift();
      if ('outcomes' in b) for (const o of b.outcomes) this.applyOutcome(o);
      else for (let i = 0; i < b.columns!.n; i++) this.applyOutcome(outcomeAt(b.columns!, i));
      this.table.touched();
    }
  }

  /** Waits for the parse thread's next answer (at once if none is outstanding). */
  private next(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise<void>((r) => this.waiters.push(r));
  }

  private applyOutcome(o: LineOutcome): void {
    if (typeof o === 'string') {
      this.stats.parseErrors[o]++;
    } else if (Array.isArray(o)) {
      const [reason, salvaged] = o as readonly [ParseErrorReason, HeartbeatRecord];
      this.stats.parseErrors[reason]++;
      this.apply(salvaged);
    } else {
      this.apply(o as HeartbeatRecord);
    }
  }

  private apply(r: HeartbeatRecord): void {
    let s = this.table.ranks.get(r.rank);
    if (!s) {
      if (!admitRank(this.table.ranks, r.rank, this.maxRanks)) {
        this.stats.parseErrors.too_many_ranks++;
        this.onRankCap?.();
        return;
      }
      s = newRankState(r.rank);
      this.table.ranks.set(r.rank, s);
    }
    this.mine.add(r.rank);
    if (r.msg === 'progress') this.progressSeen.set(r.rank, (this.progressSeen.get(r.rank) ?? 0) + 1);
    if (r.msg !== 'watchdog_dump') this.livenessSeen = true;
    reduce(s, r, this.table.params);
  }

  wantsMoreHistory(): boolean {
    // Only watchdog_dumps in the window: the newest liveness record is further back.
    if (this.mine.size > 0 && !this.livenessSeen) return true;
    for (const r of this.mine) {
      const s = this.table.ranks.get(r);
      const seen = this.progressSeen.get(r) ?? 0;
      if (!s || seen === 0 || s.bootTs !== undefined) continue; // a boot in the window resets every streak
      const st = s.streaks;
      // A streak as long as every progress record in the window may reach back past it.
      if (Math.max(st.throughputZero, st.lossSame, st.gradZero, st.gateCollapse, st.nonfinite) >= seen) return true;
    }
    return false;
  }
}

/** The bytes of line regions, each followed by its newline: what the parse thread reads. */
function gather(regions: ReadonlyArray<readonly [Buffer, number, number]>): Buffer {
  let n = 0;
  for (const [, s, e] of regions) n += e - s + 1;
  const bytes = Buffer.allocUnsafe(n);
  let at = 0;
  for (const [b, s, e] of regions) {
    at += b.copy(bytes, at, s, e);
    bytes[at++] = 10;
  }
  return bytes;
}

/** Feeds training.csv into the run's CSV state. */
export class CsvSink extends CountingSink {
  private layout: CsvLayout = DEFAULT_CSV_LAYOUT;

  constructor(
    private readonly table: RankTable,
    stats: Stats,
    onReadError?: (detail: string, reason: string) => void,
  ) {
    super(stats, onReadError);
  }

  reset(): void {
    this.table.csv = newCsvState();
  }

  line(buf: Buffer, start: number, end: number): void {
    this.stats.linesRead++;
    const res = parseCsvLine(buf.toString('utf8', start, end), this.layout);
    if (res.kind === 'header') this.layout = res.layout;
    else if (res.kind === 'error') this.stats.parseErrors.invalid_csv++;
    else if (res.kind === 'row') {
      this.table.csv ??= newCsvState();
      reduceCsv(this.table.csv, res.row);
      this.table.touched();
    }
  }

  wantsMoreHistory(): boolean {
    const c = this.table.csv;
    return c !== undefined && c.rows > 0 && c.throughputZero >= c.rows;
  }
}
