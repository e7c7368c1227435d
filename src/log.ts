// Structured logging (pino), with the Go exporters' --log.level and --log.format (logfmt|json).
import { pino, type Logger } from 'pino';

export type { Logger };

/** Builds the process logger; logs go to stderr so stdout stays free for command output. */
export function makeLogger(level: string, format: 'logfmt' | 'json', dest: NodeJS.WritableStream = process.stderr): Logger {
  const stream = format === 'json' ? dest : { write: (line: string) => dest.write(toLogfmt(line)) };
  return pino(
    {
      level,
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      messageKey: 'msg',
    },
    stream as NodeJS.WritableStream,
  );
}

/** Turns one pino JSON line into `ts=… level=… msg="…" key=value …`. */
export function toLogfmt(line: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const parts: string[] = [];
  const order = ['time', 'level', 'msg'];
  const keys = [...order.filter((k) => k in rec), ...Object.keys(rec).filter((k) => !order.includes(k))];
  for (const k of keys) {
    const v = rec[k];
    const s = typeof v === 'string' ? v : JSON.stringify(v);
    parts.push(`${k === 'time' ? 'ts' : k}=${/^[^\s"=]+$/.test(s) ? s : JSON.stringify(s)}`);
  }
  return parts.join(' ') + '\n';
}
