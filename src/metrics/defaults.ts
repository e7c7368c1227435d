// prom-client's process_* and nodejs_* metrics, served after trainwatch's own families.
import { statSync } from 'node:fs';
import { Registry, collectDefaultMetrics, type Gauge } from 'prom-client';

/** A registry with prom-client's defaults, tuned for an exporter that holds thousands of files open. */
export function defaultMetrics(): Registry {
  const registry = new Registry();
  // A 100 ms event-loop sampling period instead of prom-client's 10 ms: idle wake-ups are a
  // measurable share of an idle exporter's CPU, and 100 ms still resolves the stalls that matter.
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 });
  // These three prom-client gauges end in _total, which promtool's linter rejects.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  // prom-client counts open descriptors by listing /proc/self/fd on every scrape. A tail holds
  // one per file, and the listing blocks the event loop (docs/benchmarks.md, section 3). Since Linux 6.2 the
  // directory's size is that count; older kernels report 0 there, and keep the listing.
  const fds = registry.getSingleMetric('process_open_fds') as (Gauge & { collect?: (this: Gauge) => void }) | undefined;
  const list = fds?.collect;
  if (fds && list) {
    fds.collect = function (this: Gauge) {
      const n = openFdCount();
      if (n > 0) this.set(n);
      else list.call(this);
    };
  }
  return registry;
}

/** Open descriptors from the size of /proc/self/fd, or 0 where the kernel does not report it. */
function openFdCount(): number {
  try {
    return statSync('/proc/self/fd').size;
  } catch {
    return 0;
  }
}
