// Entry point: flags + env + config file → Config, then wiring only.
import { CommanderError } from 'commander';
import { parseCli } from './cli.js';
import { applyDefaultDir, ConfigError, NOTHING_TO_WATCH, resolveConfig } from './config/load.js';
import { AddressInUseError } from './http/server.js';
import { deferToPeer, watchedPaths } from './http/peer.js';
import type { Config } from './config/settings.js';
import { makeLogger } from './log.js';
import { start, VERSION, type Running } from './app.js';
import { runDemo } from './demo.js';
import { runStatus } from './status-cmd.js';
import { renderAlertRules, runbookBaseUrlError } from './gen/alerts.js';

/** `trainwatch rules`: the alert rules, with the user's runbook base URL, on stdout. */
async function printRules(opts: { runbookBaseUrl?: string; jobMatcher?: string }): Promise<number> {
  const bad = opts.runbookBaseUrl === undefined ? undefined : runbookBaseUrlError(opts.runbookBaseUrl);
  if (bad) {
    process.stderr.write(`trainwatch: error: --runbook-base-url ${bad}\n`);
    return 2;
  }
  // main() ends in process.exit: wait until the text is handed over (pipes are asynchronous on macOS).
  await new Promise<void>((resolve) => process.stdout.write(renderAlertRules(opts), () => resolve()));
  return 0;
}

async function main(): Promise<number> {
  let cli;
  try {
    cli = parseCli(process.argv.slice(2), VERSION);
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    process.stderr.write(`trainwatch: error: ${(e as Error).message}\n`);
    return 2;
  }
  if (cli.command === 'rules') return printRules(cli.rules!);
  let config: Config;
  try {
    config = resolveConfig(cli.flags, process.env);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    process.stderr.write(`trainwatch: error: ${e.message}\n`);
    return 2;
  }
  // The demo talks on stdout; its log shows only what trainwatch did (warnings: detections, writes).
  const level = cli.command === 'demo' && !cli.flags.has('log.level') && !process.env.TRAINWATCH_LOG_LEVEL ? 'warn' : config['log.level'];
  const log = makeLogger(level, config['log.format']);
  if (cli.command === 'demo') return runDemo(config, log, cli.demo!);
  if (cli.command === 'status') return runStatus(config, cli.status!, VERSION);
  const byDefault = applyDefaultDir(config);
  if (config.dir.length === 0 && config.root.length === 0) {
    process.stderr.write(`trainwatch: error: ${NOTHING_TO_WATCH}\n`);
    return 2;
  }
  if (byDefault) log.info({ dir: byDefault }, `no --dir or --root given: watching ${byDefault}, the original watchdog's default`);
  let running: Running;
  try {
    running = await start(config, log);
  } catch (e) {
    if (e instanceof AddressInUseError) {
      // The guide's "Multiple Watchdogs": defer to the trainwatch already watching these runs.
      const peer = await deferToPeer(config['web.listen-address'], watchedPaths(config), config.halt, e.message);
      process.stderr.write(`trainwatch: ${peer.message}\n`);
      return peer.code;
    }
    if (!(e instanceof ConfigError)) throw e;
    process.stderr.write(`trainwatch: error: ${e.message}\n`);
    return 2;
  }
  process.on('unhandledRejection', (e) => log.error({ err: String(e) }, 'unexpected error; still running'));
  await new Promise<void>((resolve) => {
    const bye = (sig: string) => {
      log.info({ signal: sig }, 'shutting down');
      // A second signal, or a stop that hangs, must not keep the process around.
      setTimeout(() => {
        log.warn('shutdown did not finish within 5 s; exiting anyway');
        process.exit(0);
      }, 5000).unref();
      void running.stop().then(() => {
        log.info('stopped');
        resolve();
      });
    };
    process.once('SIGTERM', () => bye('SIGTERM'));
    process.once('SIGINT', () => bye('SIGINT'));
  });
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: Error) => {
    process.stderr.write(`trainwatch: internal error: ${e.message}. Please report it with the command line you used.\n`);
    process.exit(70);
  },
);
