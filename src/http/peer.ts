// Another trainwatch on this host. The guide's "Multiple Watchdogs" recipe starts a second
// watchdog for the same run directory; two trainwatch processes would each open (and act on,
// and notify about) every episode. So when our port is taken, the listener is asked: if it is a
// trainwatch that already watches every directory we were given, this one says so and exits
// instead. `trainwatch status` uses the same question to find a running instance.
import { realpathSync } from 'node:fs';
import { resolve, sep } from 'node:path';

/** The directories an instance watches, as absolute real paths (in /api/status as `watch`). */
export interface WatchedPaths {
  dirs: string[];
  roots: string[];
}

/** The part of another instance's /api/status this module reads. */
export interface PeerStatus {
  version: string;
  mode: string;
  halt: boolean;
  watch?: WatchedPaths;
  runs: Array<{ dir: string }>;
}

/** How long to wait for the other listener's answer. */
export const PEER_TIMEOUT_MS = 2000;

function real(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return resolve(p);
  }
}

/** The watched directories of a config, absolute and with symlinks resolved where they exist. */
export function watchedPaths(c: { dir: readonly string[]; root: readonly string[] }): WatchedPaths {
  return { dirs: c.dir.map(real), roots: c.root.map(real) };
}

/** The base URL to reach a listen address (`:9465`, `0.0.0.0:9465`, `[::1]:9465`) from this host. */
export function urlOf(address: string): string {
  const cut = address.lastIndexOf(':');
  let host = address.slice(0, cut);
  if (host === '' || host === '0.0.0.0' || host === '[::]' || host === '::') host = '127.0.0.1';
  return `http://${host}:${address.slice(cut + 1)}`;
}

/** Whether a JSON value has the shape of trainwatch's /api/status. */
export function isTrainwatchStatus(v: unknown): v is PeerStatus {
  const o = v as Record<string, unknown> | null;
  return !!o && typeof o === 'object' && typeof o.version === 'string' && typeof o.mode === 'string' && Array.isArray(o.runs) && typeof o.states === 'object';
}

/** Asks `url`/api/status; the status if a trainwatch answered, else undefined (nothing there, another program, auth). */
export async function askPeer(url: string, timeoutMs = PEER_TIMEOUT_MS): Promise<PeerStatus | undefined> {
  try {
    const r = await fetch(`${url}/api/status`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!r.ok) return undefined;
    const body: unknown = await r.json();
    return isTrainwatchStatus(body) ? body : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `peer` watches every directory in `mine` (a --dir under one of its roots counts). */
export function covers(peer: PeerStatus, mine: WatchedPaths): boolean {
  // An instance too old to say what it watches covers nothing we can tell.
  const dirs = new Set(peer.watch?.dirs ?? []);
  const roots = peer.watch?.roots ?? [];
  const under = (p: string) => roots.some((r) => p === r || p.startsWith(r.endsWith(sep) ? r : r + sep));
  return mine.dirs.every((d) => dirs.has(d) || under(d)) && mine.roots.every(under);
}

/** What a second instance does when its port is taken: an exit code and what to tell the user. */
export async function deferToPeer(address: string, mine: WatchedPaths, halt: boolean, inUse: string): Promise<{ code: number; message: string }> {
  const url = urlOf(address);
  const peer = await askPeer(url);
  const what = [...mine.dirs, ...mine.roots].join(', ');
  if (!peer) return { code: 2, message: `error: ${inUse}` };
  if (!covers(peer, mine)) {
    return {
      code: 2,
      message: `error: ${address} is served by another trainwatch (${url}), which does not watch ${what}. Add the directory to that instance (one trainwatch watches every run on a host), or give this one another port: --web.listen-address=:0`,
    };
  }
  const desc = `trainwatch ${peer.version} at ${url} (mode ${peer.mode}, .HALT ${peer.halt ? 'on' : 'off'})`;
  if (halt && !peer.halt && peer.mode === 'embedded') {
    return {
      code: 1,
      message: `error: ${what} is already watched by ${desc}, which does not write .HALT, while this one was asked to (--halt 1). Restart that one with --halt 1 (NSA_WATCH_HALT=1); a second watchdog would act on every episode twice. Not starting.`,
    };
  }
  return {
    code: 0,
    message: `${what} is already watched by ${desc}; not starting a second watchdog (it would act on every episode twice). One trainwatch watches every rank; see \`trainwatch status\`.`,
  };
}
