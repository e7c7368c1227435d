#!/usr/bin/env python3
"""A simulated DDP trainer that writes heartbeats and control files the way the real one does.

It follows scripts/train_showcase.py of the NSA training project (see HEARTBEAT.md, "Who writes
what, rank by rank"):
- One forked process per rank. Each appends to heartbeat_rank<N>.jsonl by opening the file in
  append mode per record and writing json.dumps(record) + "\\n" (so NaN is the bare token NaN).
- Rank 0 writes boot, fineweb_loader_ready, then progress + step_end at step 1 and every
  --log-every steps, and a training.csv row with each. Ranks >= 1 write boot and the loader
  record and then nothing, unless --beats (NSA_HEARTBEAT_EVERY=1): a beat per step on every rank.
- Every rank runs the trainer's own watchdog thread: every --wd-check-s it compares the time with
  its own rank's last write; after --wd-stall-s without one it writes watchdog_stackdump_<unix>.txt
  and appends a watchdog_dump record (step 0, with path), which counts as its last write. So a
  healthy but silent rank >= 1 dumps about every --wd-stall-s, as the real one does.
- Synchronous DDP: the ranks meet at a barrier every step (the gradient all-reduce). A hung rank
  blocks the others at their next step. Rank 0 checks .HALT at the top of each step and shares
  the decision through the barrier, so every rank stops at the same step: it writes
  .sim_stopped_rank<N> (the step) and exits 0, saving nothing.
- A normal end exits 0 and writes NO final record.
- SIGUSR1 and SIGTERM dump all stacks to stackdump_<unix>.txt and the rank keeps running. Only
  SIGKILL, .HALT or a non-finite loss ends it (SIGINT too, for a human at a terminal).
- A non-finite loss aborts the run as the real trainer does: rank 0 writes .anomaly_type
  "nan_loss" and .HALT "halt: nan_loss", and every rank stops at that step.

Faults (--fault, from step --fault-at, on --fault-rank, -1 meaning every rank):
  heartbeat_stall      the training loop hangs; the watchdog thread runs on by its own rule
  watchdog_dump        the loop hangs and the watchdog thread dumps every --dump-every-s
  frozen               the whole rank wedges, watchdog thread included (default: the last rank);
                       its peers block at the next barrier, as in DDP
  crash                the rank exits 1 without a record; the launcher then kills the other
                       ranks (as torchrun does) and exits 1
  nonfinite_loss       the real trainer's nan_loss self-abort (above); nothing NaN is logged
  nonfinite_grad       progress records carry grad_norm NaN and training goes on (the real one
                       logs grad_norm with NSA_LOG_GRAD_NORM=1 and does not abort on it)
  throughput_flatline, loss_flatline, zero_grad, fetch_stall, gate_collapse
                       the matching field of rank 0's progress records goes bad
  straggler            the rank runs 4x slower and the ranks are not synchronised (a synchronous
                       straggler could not lag behind); visible per rank with --beats

Used by trainwatch's tests and by `trainwatch demo`.
"""
import argparse
import json
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from datetime import datetime, timezone

FAULTS = ["none", "heartbeat_stall", "watchdog_dump", "frozen", "throughput_flatline", "loss_flatline", "zero_grad",
          "fetch_stall", "gate_collapse", "nonfinite_loss", "nonfinite_grad", "crash", "straggler"]
HANGS = ("heartbeat_stall", "watchdog_dump", "frozen")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True, help="run directory (created if missing)")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--step-s", type=float, default=0.05, help="seconds per training step")
    p.add_argument("--log-every", type=int, default=1, help="rank 0 writes progress at step 1 and every N steps")
    p.add_argument("--steps", type=int, default=1000000, help="stop after this many steps")
    p.add_argument("--boot-s", type=float, default=0.0, help="loader start-up time after boot")
    p.add_argument("--beats", action="store_true", help="a beat record per step on every rank (NSA_HEARTBEAT_EVERY=1)")
    p.add_argument("--wd-check-s", type=float, default=30.0, help="the in-trainer watchdog's check period")
    p.add_argument("--wd-stall-s", type=float, default=180.0, help="the in-trainer watchdog dumps after this long without a write")
    p.add_argument("--fault", choices=FAULTS, default="none")
    p.add_argument("--fault-at", type=int, default=20, help="step at which the fault starts")
    p.add_argument("--fault-rank", type=int, default=-1, help="rank with the fault (-1: all; frozen: the last rank)")
    p.add_argument("--dump-every-s", type=float, default=0.5, help="watchdog_dump period of a rank hung by --fault watchdog_dump")
    p.add_argument("--csv-header", type=int, default=1)
    p.add_argument("--legacy", action="store_true", help="write one heartbeat.jsonl for all ranks")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args()
    if a.fault == "frozen" and a.fault_rank == -1:
        a.fault_rank = a.ranks - 1
    os.makedirs(a.dir, exist_ok=True)
    # Created before fork, so every rank shares them: the per-step collective and rank 0's
    # .HALT decision, one slot per step parity (rank 0 can be at most one step ahead).
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(a.ranks)
    halt = ctx.RawArray("b", 2)
    children = {}
    for rank in range(a.ranks):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = run_rank(a, rank, barrier, halt)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        children[pid] = rank

    def forward(sig, _frame):
        for c in children:
            try:
                os.kill(c, sig)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, forward)
    worst = 0
    while children:
        try:
            pid, status = os.wait()  # any rank: reap each at once, so a gone rank is no zombie
        except InterruptedError:
            continue
        del children[pid]
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and not worst:
            worst = code
            # As torchrun does: one failed rank ends the job. The others ignore SIGTERM.
            forward(signal.SIGKILL, None)
    sys.exit(worst if worst > 0 else (1 if worst else 0))


def run_rank(a, rank, barrier, halt):
    path = os.path.join(a.dir, "heartbeat.jsonl" if a.legacy else f"heartbeat_rank{rank}.jsonl")
    lock = threading.Lock()
    last = [time.time()]  # the last write, as the real Heartbeat's _last_ts (set at construction)
    say = (lambda *x: None) if a.quiet else (lambda *x: print(f"[rank {rank}]", *x, flush=True))

    def write(step, msg, **fields):
        now = time.time()
        rec = {"ts": now, "iso": datetime.now(timezone.utc).replace(tzinfo=None).isoformat() + "Z", "pid": os.getpid(),
               "rank": rank, "step": step, "msg": msg, "gpu_mem_alloc": 30000 + rank, "gpu_mem_reserved": 40000}
        rec.update(fields)
        with lock:
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            last[0] = now

    def dump_stacks(file, head):
        with open(file, "w") as f:
            f.write(head + "\n")
            for th in threading.enumerate():
                f.write(f"\n--- Thread: {th.name} ({th.ident}) ---\n")
                stack = sys._current_frames().get(th.ident)
                if stack:
                    f.write("".join(traceback.format_stack(stack)))

    def on_signal(signum, _frame):
        try:
            dump_stacks(os.path.join(a.dir, f"stackdump_{int(time.time())}.txt"), f"Signal {signum} at {datetime.now(timezone.utc).isoformat()}")
        except OSError:
            pass
        say(f"signal {signum}: stacks dumped; running on")

    signal.signal(signal.SIGUSR1, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))

    frozen = threading.Event()
    wd = {"check": a.wd_check_s, "stall": a.wd_stall_s}
    wake = threading.Event()

    def watchdog():
        while True:
            wake.wait(wd["check"])
            wake.clear()
            if frozen.is_set():
                return
            if time.time() - last[0] > wd["stall"]:
                dump = os.path.join(a.dir, f"watchdog_stackdump_{int(time.time())}.txt")
                try:
                    dump_stacks(dump, f"Watchdog at {datetime.now(timezone.utc).isoformat()}; last_heartbeat={last[0]}")
                except OSError:
                    pass
                write(0, "watchdog_dump", path=dump)

    faulty = a.fault_rank in (-1, rank)
    synchronous = a.fault != "straggler"
    write(0, "boot", phase="start")
    threading.Thread(target=watchdog, daemon=True).start()
    time.sleep(a.boot_s)
    write(0, "fineweb_loader_ready", dt=a.boot_s)
    loss = 10.0
    step = 0

    def stopped(step):
        with open(os.path.join(a.dir, f".sim_stopped_rank{rank}"), "w") as f:
            f.write(f"{step}\n")
        return 0

    for step in range(1, a.steps + 1):
        fault = a.fault != "none" and step >= a.fault_at
        if fault and faulty and a.fault in HANGS:
            say("hanging at step", step)
            if a.fault == "frozen":
                frozen.set()
            if a.fault == "watchdog_dump":
                wd["check"] = wd["stall"] = a.dump_every_s
            wake.set()
            while True:  # the training loop is stuck; signal handlers (and the watchdog thread) still run
                time.sleep(1)
        if fault and faulty and a.fault == "crash":
            say("crashing at step", step)
            os._exit(1)
        if a.beats:
            write(step, "beat", phase="step_start")
        if rank == 0:
            halt[step % 2] = 1 if os.path.exists(os.path.join(a.dir, ".HALT")) else 0
        if synchronous:
            barrier.wait()  # the collective: rank 0's .HALT decision reaches every rank here
        if (halt[step % 2] if synchronous else os.path.exists(os.path.join(a.dir, ".HALT"))):
            say("[train] HALT file detected — stopping gracefully.")
            return stopped(step)
        if fault and a.fault == "nonfinite_loss":
            # The real trainer all-reduces the finite check, so every rank aborts at this step.
            if rank == 0:
                say("[train][FATAL] non-finite loss detected — aborting run.")
                with open(os.path.join(a.dir, ".anomaly_type"), "w") as f:
                    f.write("nan_loss\n")
                with open(os.path.join(a.dir, ".HALT"), "w") as f:
                    f.write("halt: nan_loss\n")
            return stopped(step)
        bad = fault and a.fault_rank in (-1, 0)  # rank 0 writes the metrics, so only its faults show
        time.sleep(a.step_s * (4 if (fault and faulty and a.fault == "straggler") else 1))
        loss = loss * 0.995 + 0.001
        if rank == 0 and (step % a.log_every == 0 or step == 1):
            rec = {
                "loss": 3.0 if (bad and a.fault == "loss_flatline") else loss,
                "toks_per_s": 0.0 if (bad and a.fault == "throughput_flatline") else 12000.0 + 50 * math.sin(step),
                "dt_fetch_s": 5.0 if (bad and a.fault == "fetch_stall") else 0.010 + 0.001 * (step % 3),
                "grad_norm": float("nan") if (bad and a.fault == "nonfinite_grad") else (0.0 if (bad and a.fault == "zero_grad") else 1.0 + 0.1 * math.cos(step)),
                "gate_entropy_mean": 0.05 if (bad and a.fault == "gate_collapse") else 0.9,
                "gate_entropy_min": 0.5, "gate_max_gate": 0.99 if (bad and a.fault == "gate_collapse") else 0.4,
                "gate_collapse_frac": 0.0, "gate_branch_shares": [0.3, 0.3, 0.4],
            }
            write(step, "progress", **rec)
            write(step, "step_end", phase="end")
            csv = os.path.join(a.dir, "training.csv")
            new = not os.path.exists(csv)
            with open(csv, "a") as f:
                if new and a.csv_header:
                    f.write("step,loss,lr,toks_per_s\n")
                f.write(f"{step},{rec['loss']:.6f},{3e-4:.6e},{rec['toks_per_s']:.0f}\n")
    say("finished", step, "steps")
    return 0


if __name__ == "__main__":
    main()
