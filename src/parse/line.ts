// One heartbeat line → one record, or a counted error. Pure: no I/O, no clock.
//
// The trainer writes with Python's json.dumps, which emits non-finite floats as the bare
// tokens NaN, Infinity and -Infinity. Those lines are invalid JSON, and they are the most
// important ones (a diverged run). We try JSON.parse first (the fast path for nearly every
// line) and only on failure rewrite bare tokens *outside string literals* to sentinel
// strings, which a reviver turns back into numbers. A quoted "NaN" stays a string.
import { isUtf8 } from 'node:buffer';

/** Why a line could not become a record; the `reason` label of trainwatch_parse_errors_total. */
export const PARSE_ERROR_REASONS = [
  'invalid_json',
  'invalid_csv',
  'invalid_utf8',
  'blank_line',
  'not_an_object',
  'missing_field',
  'bad_field_type',
  'line_too_long',
  'partial_line_dropped',
  'read_error',
  'too_many_ranks',
  'not_regular_file',
  'sparse_skip',
  'copytruncate_lost',
  'run_name_not_utf8',
] as const;
export type ParseErrorReason = (typeof PARSE_ERROR_REASONS)[number];

/** A heartbeat record with the fields trainwatch reads; unknown fields are dropped. */
export interface HeartbeatRecord {
  ts: number;
  rank: number;
  step: number;
  msg: string;
  pid?: number;
  loss?: number;
  toks_per_s?: number;
  dt_fetch_s?: number;
  grad_norm?: number;
  gpu_mem_alloc?: number;
  gpu_mem_reserved?: number;
  gate_entropy_mean?: number;
  gate_entropy_min?: number;
  gate_max_gate?: number;
  gate_collapse_frac?: number;
}

export type ParseResult = { ok: true; record: HeartbeatRecord } | { ok: false; reason: ParseErrorReason };

/** What one line of a heartbeat file yields: a record, an error, or an error plus the record salvaged from it. */
export type LineOutcome = HeartbeatRecord | ParseErrorReason | readonly [ParseErrorReason, HeartbeatRecord];

/** Bytes [start, end) of buf (one line without its newline) → its outcome. */
export function parseHeartbeatLine(buf: Buffer, start: number, end: number): LineOutcome {
  if (end === start || (end === start + 1 && buf[start] === 13)) return 'blank_line';
  const text = buf.toString('utf8', start, end);
  if (text.includes('\uFFFD') && !isUtf8(buf.subarray(start, end))) return 'invalid_utf8';
  const res = parseLine(text);
  if (res.ok) return res.record;
  // A writer killed mid-line leaves a fragment that the next record is glued onto.
  const salvaged = salvage(text, res.reason);
  return salvaged ? [res.reason, salvaged] : res.reason;
}

function salvage(text: string, reason: ParseErrorReason): HeartbeatRecord | undefined {
  if (reason !== 'invalid_json') return undefined;
  const at = text.lastIndexOf('{"');
  if (at <= 0) return undefined;
  const res = parseLine(text.slice(at));
  return res.ok ? res.record : undefined;
}

/** A number field, or undefined when absent or of another type. */
const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);

/** Parses one line (without its newline; a trailing \r and a leading BOM are tolerated). */
export function parseLine(line: string): ParseResult {
  if (line.charCodeAt(0) === 0xfeff) line = line.slice(1);
  if (line.endsWith('\r')) line = line.slice(0, -1);
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    const fixed = parsePythonJson(line);
    if (fixed === undefined) return { ok: false, reason: 'invalid_json' };
    value = fixed;
  }
  return toRecord(value);
}

/** Validates a parsed value into a record. */
export function toRecord(value: unknown): ParseResult {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { ok: false, reason: 'not_an_object' };
  const o = value as Record<string, unknown>;
  const { ts, rank, step, msg } = o;
  if (ts === undefined || rank === undefined || step === undefined) return { ok: false, reason: 'missing_field' };
  if (typeof ts !== 'number' || !Number.isFinite(ts)) return { ok: false, reason: 'bad_field_type' };
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 0 || rank > 1_000_000) return { ok: false, reason: 'bad_field_type' };
  if (typeof step !== 'number' || !Number.isFinite(step)) return { ok: false, reason: 'bad_field_type' };
  const pid = o.pid;
  // One object literal with every field (absent ones undefined): every record then shares one
  // hidden class, which V8 reads faster than objects built key by key (docs/benchmarks.md, section 6).
  const record: HeartbeatRecord = {
    ts,
    rank,
    step,
    msg: typeof msg === 'string' ? msg : '',
    pid: typeof pid === 'number' && Number.isInteger(pid) && pid > 0 ? pid : undefined,
    loss: num(o.loss),
    toks_per_s: num(o.toks_per_s),
    dt_fetch_s: num(o.dt_fetch_s),
    grad_norm: num(o.grad_norm),
    gpu_mem_alloc: num(o.gpu_mem_alloc),
    gpu_mem_reserved: num(o.gpu_mem_reserved),
    gate_entropy_mean: num(o.gate_entropy_mean),
    gate_entropy_min: num(o.gate_entropy_min),
    gate_max_gate: num(o.gate_max_gate),
    gate_collapse_frac: num(o.gate_collapse_frac),
  };
  return { ok: true, record };
}

const SENTINEL = '\u0000tw:';
const TOKENS: Array<[string, number]> = [
  ['-Infinity', -Infinity],
  ['Infinity', Infinity],
  ['NaN', NaN],
];

/**
 * Parses JSON that may hold Python's bare NaN/Infinity/-Infinity tokens. Returns undefined if
 * the text is not valid even then. Tokens inside string literals are left alone.
 */
export function parsePythonJson(text: string): unknown {
  // A sentinel that occurs in the text already would make the reviver ambiguous; refuse.
  if (text.includes(SENTINEL) || text.includes('\\u0000tw:')) return undefined;
  let out = '';
  let last = 0;
  let replaced = false;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) {
      inString = true;
      continue;
    }
    if (c !== 0x4e && c !== 0x49 && c !== 0x2d) continue; // N, I, -
    for (const [token] of TOKENS) {
      if (text.startsWith(token, i) && !isIdentChar(text.charCodeAt(i + token.length))) {
        out += text.slice(last, i) + JSON.stringify(SENTINEL + token);
        i += token.length - 1;
        last = i + 1;
        replaced = true;
        break;
      }
    }
  }
  if (!replaced) return undefined;
  out += text.slice(last);
  try {
    return JSON.parse(out, revive);
  } catch {
    return undefined;
  }
}

function isIdentChar(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x5f;
}

function revive(_key: string, v: unknown): unknown {
  if (typeof v === 'string' && v.startsWith(SENTINEL)) {
    const name = v.slice(SENTINEL.length);
    for (const [token, num] of TOKENS) if (token === name) return num;
  }
  return v;
}
