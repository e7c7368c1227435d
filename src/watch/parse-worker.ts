// The parse thread: heartbeat bytes in, columns out (transferred, not copied). See parse-pool.ts.
import { parentPort } from 'node:worker_threads';
import { parseColumns, transferList } from '../parse/columns.js';

parentPort?.on('message', (m: { id: number; bytes: ArrayBuffer }) => {
  const columns = parseColumns(Buffer.from(m.bytes));
  parentPort!.postMessage({ id: m.id, columns }, transferList(columns));
});
