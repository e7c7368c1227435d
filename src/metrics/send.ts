// Answers a scrape. Plain text goes out chunk by chunk while the rest is still being rendered
// (never one concatenated copy). A scraper that accepts gzip, as Prometheus does by default,
// gets it: far fewer bytes for some CPU on a thread-pool thread (figures: docs/benchmarks.md, section 3).
// (`enable_compression: false` in Prometheus's scrape config asks for the plain text.)
import { once } from 'node:events';
import { createGzip } from 'node:zlib';
import type { Request, Response } from 'express';
import type { Sink } from './render.js';

const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
/** Level 1: level 6 saves little more for about three times the CPU (docs/benchmarks.md, section 3). */
const GZIP_LEVEL = 1;
/**
 * Bytes handed to zlib at a time. Each hand-over waits for a turn of the event loop, behind
 * the sweep's batches, so small pieces made scrapes slower (docs/benchmarks.md, section 3).
 */
const GZIP_PIECE = 4 << 20;

/** `render` writes trainwatch's families, synchronously, through the sink (if given) and returns them; prom-client's `defaults` follow. */
export async function sendExposition(req: Request, res: Response, render: (sink?: Sink) => Buffer[], defaults: () => Promise<string>): Promise<void> {
  res.type(CONTENT_TYPE).setHeader('Vary', 'Accept-Encoding');
  if (req.acceptsEncodings('gzip', 'identity') === 'gzip') {
    const chunks = render();
    chunks.push(Buffer.from(await defaults()));
    const body = await gzip(chunks);
    res.setHeader('Content-Encoding', 'gzip');
    res.setHeader('Content-Length', body.length);
    res.end(body);
    return;
  }
  try {
    render((chunk) => res.write(chunk));
  } catch (e) {
    // Part of the body is out: the scraper must see a failed scrape, not a short one.
    if (res.headersSent) return void res.destroy(e as Error);
    throw e;
  }
  res.end(Buffer.from(await defaults()));
}

/** One gzip member of `chunks`, compressed on the thread pool a few MiB at a time. */
async function gzip(chunks: Buffer[]): Promise<Buffer> {
  const z = createGzip({ level: GZIP_LEVEL, chunkSize: GZIP_PIECE >> 3 });
  const out: Buffer[] = [];
  z.on('data', (d: Buffer) => out.push(d));
  const ended = once(z, 'end');
  ended.catch(() => undefined); // a write's error is the one thrown; this one must not go unhandled
  for (let i = 0; i < chunks.length;) {
    const group: Buffer[] = [];
    let n = 0;
    while (i < chunks.length && n < GZIP_PIECE) n += group[group.push(chunks[i++]) - 1].length;
    const piece = Buffer.concat(group, n);
    await new Promise<void>((resolve, reject) => z.write(piece, (e) => (e ? reject(e) : resolve())));
  }
  z.end();
  await ended;
  return Buffer.concat(out);
}
