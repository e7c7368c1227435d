// A manual clock for the evaluator: time moves only when a test says so, and due timers fire then.
import type { Clock, Timer } from '../../src/watch/clock.js';

/** A Clock whose time a test advances; timers fire in deadline order as it passes them. */
export class ManualClock implements Clock {
  private timers = new Map<number, { at: number; fn: () => void }>();
  private seq = 0;

  constructor(public t: number) {}

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + ms / 1000, fn });
    return id;
  }

  clearTimeout(t: Timer | undefined): void {
    if (t !== undefined) this.timers.delete(t as number);
  }

  /** The next timer's due time, if any. */
  next(): number | undefined {
    let at: number | undefined;
    for (const x of this.timers.values()) if (at === undefined || x.at < at) at = x.at;
    return at;
  }

  /** Moves to `t`, firing each timer due on the way; waits for what each firing started. */
  async advanceTo(t: number, settle: () => Promise<void>): Promise<void> {
    for (;;) {
      const due = [...this.timers].filter(([, x]) => x.at <= t).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      due[1].fn();
      await settle();
    }
    this.t = t;
  }
}
