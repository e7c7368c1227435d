// The clock and timers the watcher runs on, injected (as mtail injects its waker) so that the
// evaluation rules are tested with a manual clock: no processes, no sleeps.

/** A timer handle, as the clock hands it out. */
export type Timer = object | number;

/** Time in seconds, and one-shot timers. */
export interface Clock {
  now(): number;
  /** runs `fn` after `ms`; the timer never keeps the process alive */
  setTimeout(fn: () => void, ms: number): Timer;
  clearTimeout(t: Timer | undefined): void;
}

/** The system clock. */
export const systemClock: Clock = {
  now: () => Date.now() / 1000,
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout: (t) => clearTimeout(t as NodeJS.Timeout | undefined),
};
