// Sinks: complete lines from a FileTail → parsed records → run state.
import { isUtf8 } from 'node:buffer';
import { DEFAULT_CSV_LAYOUT, parseCsvLine, type CsvLayout } from '../parse/csv.js';
import { parseLine, type HeartbeatRecord, type ParseResult } from '../parse/line.js';
import { newRankState, reduce, type RankState, type ReduceParams } from '../state/rank.js';
import { newCsvState, reduceCsv, type CsvState } from '../state/run.js';
import type { TailSink } from '../source/tail.js';
import type { Stats } from './stats.js';

/** What a sink writes into: the ranks of one run. */
export interface RankTable {
  ranks: Map<number, RankState>;
  csv?: CsvState;
  /** called after a batch of new lines changed the run */
  touched(): void;
}

/** What every sink does with the tail's errors and byte counts. */
abstract class CountingSink implements TailSink {
  constructor(
    protected readonly stats: Stats,
    /** told about each distinct read failure (the tail reports one per failure, not one per poll) */
    private readonly onReadError?: (detail: string) => void,
  ) {}

  abstract reset(): void;
  abstract line(buf: Buffer, start: number, end: number): void;
  abstract wantsMoreHistory(): boolean;

  error(reason: 'line_too_long' | 'partial_line_dropped' | 'read_error', detail?: string): void {
    this.stats.parseErrors[reason]++;
    if (reason === 'read_error') this.onReadError?.(detail ?? 'read error');
  }

  bytes(n: number): void {
    this.stats.bytesRead += n;
  }
}

/** Feeds one heartbeat file into the run's rank table. */
export class HeartbeatSink extends CountingSink {
  /** ranks this file has contributed (a legacy heartbeat.jsonl holds several) */
  private readonly mine = new Set<number>();
  /** progress records per rank since the last reset, to tell an unbroken streak */
  private readonly progressSeen = new Map<number, number>();
  private livenessSeen = false;

  constructor(
    private readonly table: RankTable,
    private readonly params: ReduceParams,
    stats: Stats,
    onReadError?: (detail: string) => void,
  ) {
    super(stats, onReadError);
  }

  reset(): void {
    for (const r of this.mine) this.table.ranks.delete(r);
    this.mine.clear();
    this.progressSeen.clear();
    this.livenessSeen = false;
  }

  line(buf: Buffer, start: number, end: number): void {
    this.stats.linesRead++;
    if (end === start || (end === start + 1 && buf[start] === 13)) {
      this.stats.parseErrors.blank_line++;
      return;
    }
    const text = buf.toString('utf8', start, end);
    if (text.includes('\uFFFD') && !isUtf8(buf.subarray(start, end))) {
      this.stats.parseErrors.invalid_utf8++;
      return;
    }
    const res = parseLine(text);
    if (!res.ok) {
      this.stats.parseErrors[res.reason]++;
      // A writer killed mid-line leaves a fragment that the next record is glued onto.
      const salvaged = salvage(text, res);
      if (salvaged) this.apply(salvaged);
      return;
    }
    this.apply(res.record);
    this.table.touched();
  }

  private apply(r: HeartbeatRecord): void {
    let s = this.table.ranks.get(r.rank);
    if (!s) {
      s = newRankState(r.rank);
      this.table.ranks.set(r.rank, s);
    }
    this.mine.add(r.rank);
    if (r.msg === 'progress') this.progressSeen.set(r.rank, (this.progressSeen.get(r.rank) ?? 0) + 1);
    if (r.msg !== 'watchdog_dump') this.livenessSeen = true;
    reduce(s, r, this.params);
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

function salvage(text: string, failed: ParseResult): HeartbeatRecord | undefined {
  if (failed.ok || failed.reason !== 'invalid_json') return undefined;
  const at = text.lastIndexOf('{"');
  if (at <= 0) return undefined;
  const res = parseLine(text.slice(at));
  return res.ok ? res.record : undefined;
}

/** Feeds training.csv into the run's CSV state. */
export class CsvSink extends CountingSink {
  private layout: CsvLayout = DEFAULT_CSV_LAYOUT;

  constructor(
    private readonly table: RankTable,
    stats: Stats,
    onReadError?: (detail: string) => void,
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
