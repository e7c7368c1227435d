// The bcrypt thread: password comparisons (and the decoy hash) off the event loop. See BcryptThread in webconfig.ts.
import { parentPort } from 'node:worker_threads';
import bcrypt from 'bcryptjs';

/** A request to the thread: compare `password` with `hash`, or (no hash) make a hash of `password` at `cost`. */
export interface BcryptRequest {
  id: number;
  password: string;
  hash?: string;
  cost?: number;
}

parentPort?.on('message', (m: BcryptRequest) => {
  const result = m.hash !== undefined ? bcrypt.compareSync(m.password, m.hash) : bcrypt.hashSync(m.password, m.cost);
  parentPort!.postMessage({ id: m.id, result });
});
