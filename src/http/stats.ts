// Counters of the HTTP side: plain numbers, rendered at scrape time like the watcher's Stats.
import type { HttpCounters } from '../metrics/render.js';

/** Why the server closed a connection without serving it. */
export type RefusedReason = 'max_connections' | 'client_cert' | 'tls_handshake';
/** What a basic-auth check concluded. */
export type BasicAuthResult = 'accepted' | 'rejected' | 'throttled';

/** Connection and basic-auth counters; every label value starts at 0 so the series exist. */
export class HttpStats implements HttpCounters {
  /** open connections now */
  connections = 0;
  refused = new Map<RefusedReason, number>([
    ['max_connections', 0],
    ['client_cert', 0],
    ['tls_handshake', 0],
  ]);
  basicAuth = new Map<BasicAuthResult, number>([
    ['accepted', 0],
    ['rejected', 0],
    ['throttled', 0],
  ]);
  /** bcrypt comparisons run (cache misses) */
  bcrypt = 0;

  /** Counts one refused connection. */
  refuse(reason: RefusedReason): void {
    this.refused.set(reason, this.refused.get(reason)! + 1);
  }

  /** Counts one basic-auth check by its result. */
  auth(result: BasicAuthResult): void {
    this.basicAuth.set(result, this.basicAuth.get(result)! + 1);
  }
}
