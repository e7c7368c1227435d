// Which runs a sweep visits when file events are on. Pure: no I/O, no clock.

/**
 * A sweep visits at least this many files' worth of runs: up to this many files, every run is
 * visited by every sweep...
 */
export const SWEEP_MIN_FILES = 625;
/** ...and at least 1/SWEEP_PASS of all files, so that every run is visited within SWEEP_PASS sweeps. */
export const SWEEP_PASS = 16;

/** What the plan needs to know of a run. */
export interface SweepCandidate {
  /** the number of the sweep that last visited it; -1 if none did */
  sweptAt: number;
  /** files it holds (a run with none counts as one) */
  files: number;
  /** visited whatever the budget: no file event covers it, or its directory may be gone */
  due: boolean;
}

/**
 * The runs to visit: every due run, then the runs visited longest ago until the files visited
 * reach max(SWEEP_MIN_FILES, ceil(all files / SWEEP_PASS)). Due runs do not use up the budget,
 * so they cannot starve the others: each run waits at most SWEEP_PASS sweeps.
 */
export function planSweep<R>(runs: Iterable<R>, of: (run: R) => SweepCandidate): R[] {
  const out: R[] = [];
  const rest: Array<{ run: R; c: SweepCandidate }> = [];
  let files = 0;
  for (const run of runs) {
    const c = of(run);
    files += Math.max(1, c.files);
    if (c.due || c.sweptAt < 0) out.push(run);
    else rest.push({ run, c });
  }
  const budget = Math.max(SWEEP_MIN_FILES, Math.ceil(files / SWEEP_PASS));
  rest.sort((a, b) => a.c.sweptAt - b.c.sweptAt);
  let spent = 0;
  for (const { run, c } of rest) {
    if (spent >= budget) break;
    out.push(run);
    spent += Math.max(1, c.files);
  }
  return out;
}
