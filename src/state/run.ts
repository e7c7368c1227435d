// Run-level state that is not per rank: the training.csv throughput source (rank 0 only).
import type { CsvRow } from '../parse/csv.js';

/** What training.csv tells about a run. */
export interface CsvState {
  rows: number;
  step?: number;
  loss?: number;
  toksPerS?: number;
  /** rows in a row with toks_per_s <= 0: the original watchdog's flatline source */
  throughputZero: number;
}

/** A fresh training.csv state. */
export function newCsvState(): CsvState {
  return { rows: 0, throughputZero: 0 };
}

/** Applies one training.csv row. */
export function reduceCsv(s: CsvState, row: CsvRow): CsvState {
  s.rows++;
  s.step = row.step;
  if (row.loss !== undefined) s.loss = row.loss;
  if (row.toks_per_s !== undefined) {
    s.toksPerS = row.toks_per_s;
    s.throughputZero = row.toks_per_s <= 0 ? s.throughputZero + 1 : 0;
  }
  return s;
}
