// training.csv rows (rank 0 only): `step,loss,lr,toks_per_s`, header optional, `nan` allowed.
// Pure: the caller feeds complete lines; the column order comes from a header if one was seen.

/** One training.csv row. */
export interface CsvRow {
  step: number;
  loss?: number;
  toks_per_s?: number;
}

/** Column layout of a training.csv: indexes of the fields trainwatch reads. */
export interface CsvLayout {
  step: number;
  loss: number;
  toks: number;
}

/** The layout when a file has no header line. */
export const DEFAULT_CSV_LAYOUT: CsvLayout = { step: 0, loss: 1, toks: 3 };

export type CsvResult = { kind: 'header'; layout: CsvLayout } | { kind: 'row'; row: CsvRow } | { kind: 'blank' } | { kind: 'error' };

/** Parses one CSV line; a header line yields the layout to use for later rows. */
export function parseCsvLine(line: string, layout: CsvLayout): CsvResult {
  if (line.charCodeAt(0) === 0xfeff) line = line.slice(1);
  line = line.trim();
  if (line === '') return { kind: 'blank' };
  const cells = line.split(',').map((c) => c.trim());
  if (cells.includes('step') && num(cells[0]) === undefined) {
    const step = cells.indexOf('step');
    const loss = cells.indexOf('loss');
    const toks = cells.indexOf('toks_per_s');
    return { kind: 'header', layout: { step, loss, toks } };
  }
  const step = num(cells[layout.step]);
  if (step === undefined || !Number.isFinite(step)) return { kind: 'error' };
  const row: CsvRow = { step };
  const loss = layout.loss >= 0 ? num(cells[layout.loss]) : undefined;
  const toks = layout.toks >= 0 ? num(cells[layout.toks]) : undefined;
  if (loss !== undefined) row.loss = loss;
  if (toks !== undefined) row.toks_per_s = toks;
  return { kind: 'row', row };
}

function num(cell: string | undefined): number | undefined {
  if (cell === undefined || cell === '') return undefined;
  switch (cell.toLowerCase()) {
    case 'nan':
      return NaN;
    case 'inf':
    case 'infinity':
      return Infinity;
    case '-inf':
    case '-infinity':
      return -Infinity;
  }
  const v = Number(cell);
  return Number.isNaN(v) ? undefined : v;
}
