// Wiring: a resolved Config → a running watcher and server.
import { readFileSync } from 'node:fs';
import type { Config } from './config/settings.js';
import type { Logger } from './log.js';
import { startServer, type Started } from './http/server.js';
import { Watcher } from './watch/watcher.js';

/** The package version, from package.json. */
export const VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** A running trainwatch: its watcher and server. */
export interface Running {
  watcher: Watcher;
  server: Started;
  stop(): Promise<void>;
}

/** Starts watching and serving with a resolved config. */
export async function start(config: Config, log: Logger): Promise<Running> {
  const watcher = new Watcher(config, log);
  const server = await startServer(watcher, log, VERSION);
  await watcher.start();
  log.info(
    {
      address: config['web.listen-address'].replace(/:\d+$/, `:${server.port}`),
      runs: watcher.runs.size,
      mode: config.mode,
      halt: config.halt,
    },
    `trainwatch ${VERSION} watching ${[...config.dir, ...config.root].join(', ')}`,
  );
  return {
    watcher,
    server,
    stop: async () => {
      await server.close();
      await watcher.stop();
    },
  };
}
