// Process facts and signals for crash detection and escalation (Linux /proc).
import { readFile } from 'node:fs/promises';

let bootTimeS: number | undefined;
const TICKS = 100; // USER_HZ: 100 on every mainstream Linux build

/** Unix time at which `pid` started on this host, or undefined if there is no such process. */
export async function processStartTime(pid: number): Promise<number | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Field 22 (starttime), counted after the ")" that closes the command name.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const start = Number(fields[19]);
    if (bootTimeS === undefined) {
      const m = /^btime (\d+)$/m.exec(await readFile('/proc/stat', 'utf8'));
      bootTimeS = m ? Number(m[1]) : 0;
    }
    return bootTimeS + start / TICKS;
  } catch {
    return undefined;
  }
}

/** Whether `pid` is alive on this host (EPERM still means alive). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Sends a signal; returns `ok` or the error code. */
export function sendSignal(pid: number, sig: NodeJS.Signals): string {
  try {
    process.kill(pid, sig);
    return 'ok';
  } catch (e) {
    return ((e as NodeJS.ErrnoException).code ?? 'error').toLowerCase();
  }
}
