// A batch of heartbeat lines parsed into columns, so that a worker thread can hand its results
// back without copying: typed arrays are transferred, not cloned. Structured-cloning one
// object per record cost about as much as parsing it, which would have eaten the gain.
// Pure: bytes in, columns out, and back to the same outcomes parseHeartbeatLine() gives.
import { PARSE_ERROR_REASONS, parseHeartbeatLine, type HeartbeatRecord, type LineOutcome, type ParseErrorReason } from './line.js';

/** The numeric fields of a record, in column order. */
const FIELDS = [
  'ts',
  'rank',
  'step',
  'pid',
  'loss',
  'toks_per_s',
  'dt_fetch_s',
  'grad_norm',
  'gpu_mem_alloc',
  'gpu_mem_reserved',
  'gate_entropy_mean',
  'gate_entropy_min',
  'gate_max_gate',
  'gate_collapse_frac',
] as const satisfies readonly (keyof HeartbeatRecord)[];
const W = FIELDS.length;
const NO_RECORD = 0xffffffff;

/** Outcomes of `n` lines, column-major per line. */
export interface LineColumns {
  n: number;
  /** n × FIELDS values; an absent field is 0 with its bit clear in `present` */
  values: Float64Array;
  /** per line: bit k set when FIELDS[k] is present */
  present: Uint16Array;
  /** per line: index into `msgs`, or NO_RECORD when the line gave no record */
  msg: Uint32Array;
  /** per line: 0, or 1 + the index of its error in PARSE_ERROR_REASONS */
  error: Uint8Array;
  msgs: string[];
}

/** Parses every line of `buf` (lines end with \n; the last one too). */
export function parseColumns(buf: Buffer): LineColumns {
  let n = 0;
  for (let i = buf.indexOf(10); i !== -1; i = buf.indexOf(10, i + 1)) n++;
  const out: LineColumns = { n, values: new Float64Array(n * W), present: new Uint16Array(n), msg: new Uint32Array(n), error: new Uint8Array(n), msgs: [] };
  const msgIndex = new Map<string, number>();
  let start = 0;
  for (let i = 0; i < n; i++) {
    const end = buf.indexOf(10, start);
    const o = parseHeartbeatLine(buf, start, end);
    start = end + 1;
    let rec: HeartbeatRecord | undefined;
    if (typeof o === 'string') out.error[i] = 1 + PARSE_ERROR_REASONS.indexOf(o);
    else if (Array.isArray(o)) {
      const [reason, salvaged] = o as readonly [ParseErrorReason, HeartbeatRecord];
      out.error[i] = 1 + PARSE_ERROR_REASONS.indexOf(reason);
      rec = salvaged;
    } else rec = o as HeartbeatRecord;
    if (!rec) {
      out.msg[i] = NO_RECORD;
      continue;
    }
    let m = msgIndex.get(rec.msg);
    if (m === undefined) {
      m = out.msgs.push(rec.msg) - 1;
      msgIndex.set(rec.msg, m);
    }
    out.msg[i] = m;
    let bits = 0;
    for (let k = 0; k < W; k++) {
      const v = rec[FIELDS[k]];
      if (typeof v === 'number') {
        out.values[i * W + k] = v;
        bits |= 1 << k;
      }
    }
    out.present[i] = bits;
  }
  return out;
}

/** Line i's outcome, exactly as parseHeartbeatLine() gave it in the worker. */
export function outcomeAt(c: LineColumns, i: number): LineOutcome {
  const e = c.error[i];
  const error = e === 0 ? undefined : PARSE_ERROR_REASONS[e - 1];
  if (c.msg[i] === NO_RECORD) return error!;
  const v = c.values;
  const b = i * W;
  const p = c.present[i];
  // Same shape as toRecord()'s literal (field order included), so records stay one hidden class.
  const record: HeartbeatRecord = {
    ts: v[b],
    rank: v[b + 1],
    step: v[b + 2],
    msg: c.msgs[c.msg[i]],
    pid: p & (1 << 3) ? v[b + 3] : undefined,
    loss: p & (1 << 4) ? v[b + 4] : undefined,
    toks_per_s: p & (1 << 5) ? v[b + 5] : undefined,
    dt_fetch_s: p & (1 << 6) ? v[b + 6] : undefined,
    grad_norm: p & (1 << 7) ? v[b + 7] : undefined,
    gpu_mem_alloc: p & (1 << 8) ? v[b + 8] : undefined,
    gpu_mem_reserved: p & (1 << 9) ? v[b + 9] : undefined,
    gate_entropy_mean: p & (1 << 10) ? v[b + 10] : undefined,
    gate_entropy_min: p & (1 << 11) ? v[b + 11] : undefined,
    gate_max_gate: p & (1 << 12) ? v[b + 12] : undefined,
    gate_collapse_frac: p & (1 << 13) ? v[b + 13] : undefined,
  };
  return error ? [error, record] : record;
}

/** The transferable buffers of a batch (postMessage's transfer list). */
export function transferList(c: LineColumns): ArrayBuffer[] {
  return [c.values.buffer, c.present.buffer, c.msg.buffer, c.error.buffer] as ArrayBuffer[];
}
