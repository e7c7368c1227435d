// The /healthz prober of the benchmarks, run as its own process (startProber in lib.ts), so that
// its timing does not share an event loop with the load generator. Every `interval` ms it sends
// GET <url>/healthz and prints one line per probe: "<wall s when sent> <round trip ms> <status>"
// (status 0: no answer, refused or timed out). A probe waits for the previous one, so a blocked
// trainwatch is seen as one long round trip, not as a pile of queued ones.
// Usage: node probe.js <url> <interval ms> keepalive|fresh
//   keepalive: one connection for all probes (the event loop's responsiveness);
//   fresh: a new connection per probe, as a kubelet or load-balancer health check makes.
import { Agent, get } from 'node:http';
import { sleep, wallS } from './lib.js';

const [url, intervalArg, mode] = process.argv.slice(2);
const interval = Number(intervalArg);
const agent = mode === 'fresh' ? false : new Agent({ keepAlive: true, maxSockets: 1 });

function one(): Promise<void> {
  return new Promise<void>((resolve) => {
    const at = wallS();
    const t0 = performance.now();
    let settled = false;
    const done = (status: number) => {
      if (settled) return;
      settled = true;
      process.stdout.write(`${at.toFixed(4)} ${(performance.now() - t0).toFixed(2)} ${status}\n`);
      resolve();
    };
    const req = get(`${url}/healthz`, { agent }, (r) => {
      r.resume();
      r.on('end', () => done(r.statusCode ?? 0));
      r.on('error', () => done(0));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.on('error', () => done(0));
  });
}

process.on('SIGTERM', () => process.exit(0));
for (;;) {
  const t0 = performance.now();
  await one();
  const rest = interval - (performance.now() - t0);
  if (rest > 0) await sleep(rest);
}
