// A second thread that parses big backlogs alongside the main one (tail.parse-thread-bytes).
// Only the parse moves: the sink applies every line, in file order, on the main thread, and
// a batch the thread cannot parse (it crashed, or never started) is parsed on the main thread
// from the same bytes, so nothing is lost or counted twice. The thread is started on first use
// and stopped after a few idle seconds; it never keeps the process alive.
import { Worker } from 'node:worker_threads';
import type { LineColumns } from '../parse/columns.js';

const IDLE_STOP_MS = 5000;

export class ParsePool {
  private worker: Worker | undefined;
  private readonly waiting = new Map<number, { resolve: (c: LineColumns) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** set when the thread failed to start or died: later batches stay on the main thread */
  failure: string | undefined;

  constructor(private readonly onFailure: (detail: string) => void = () => undefined) {}

  /** True while batches may be sent. */
  get usable(): boolean {
    return !this.closed && this.failure === undefined;
  }

  /** Parses `bytes` (whole lines, each ending with \n) on the thread; `bytes` is handed over. */
  parse(bytes: Buffer): Promise<LineColumns> {
    if (!this.usable) return Promise.reject(new Error(this.failure ?? 'parse thread stopped'));
    let w: Worker;
    try {
      w = this.start();
    } catch (e) {
      // e.g. a missing parse-worker.js in a broken install: never an exception out of a read
      this.fail(`parse thread could not start: ${(e as Error).message}`);
      return Promise.reject(e);
    }
    clearTimeout(this.idleTimer);
    const id = this.nextId++;
    return new Promise<LineColumns>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      // A Buffer may be a view into a shared pool: transfer a private copy of just its bytes.
      const ab =
        bytes.byteOffset === 0 && bytes.length === bytes.buffer.byteLength
          ? bytes.buffer
          : bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
      w.postMessage({ id, bytes: ab }, [ab as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.idleTimer);
    const w = this.worker;
    this.worker = undefined;
    this.failAll(new Error('parse thread stopped'));
    await w?.terminate();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL('./parse-worker.js', import.meta.url));
    w.unref();
    w.on('message', (m: { id: number; columns: LineColumns }) => {
      const p = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      p?.resolve(m.columns);
      if (this.waiting.size === 0) this.idleTimer = setTimeout(() => this.stopIdle(), IDLE_STOP_MS).unref();
    });
    w.on('error', (e) => this.fail(`parse thread failed: ${e.message}`));
    w.on('exit', (code) => {
      if (this.worker === w && !this.closed) this.fail(`parse thread exited with code ${code}`);
    });
    this.worker = w;
    return w;
  }

  private stopIdle(): void {
    if (this.waiting.size > 0 || !this.worker) return;
    const w = this.worker;
    this.worker = undefined;
    void w.terminate();
  }

  private fail(detail: string): void {
    if (this.failure !== undefined) return;
    this.failure = detail;
    this.worker = undefined;
    this.failAll(new Error(detail));
    this.onFailure(detail);
  }

  private failAll(e: Error): void {
    for (const p of this.waiting.values()) p.reject(e);
    this.waiting.clear();
  }
}
