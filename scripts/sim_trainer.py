#!/usr/bin/env python3
"""A simulated DDP trainer that writes heartbeats exactly the way the real one does.

One process per rank (forked), each appending to heartbeat_rank<N>.jsonl by opening the file in
append mode per record and writing json.dumps(record) + "\\n" (so NaN becomes the bare token NaN).
Rank 0 also writes training.csv. Every step checks for .HALT and stops gracefully if it exists,
except while "hung", when the loop is stuck and only the trainer's own watchdog thread writes
watchdog_dump records, as the real one does. SIGUSR1 dumps stacks to a file; SIGTERM exits.

Used by trainwatch's tests and by `trainwatch demo`.
"""
import argparse
import json
import math
import os
import signal
import sys
import threading
import time
import traceback

FAULTS = ["none", "heartbeat_stall", "watchdog_dump", "throughput_flatline", "loss_flatline", "zero_grad",
          "fetch_stall", "gate_collapse", "nonfinite_loss", "crash", "straggler"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="run directory (created if missing)")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--step-s", type=float, default=0.05, help="seconds per training step")
    p.add_argument("--log-every", type=int, default=1, help="a progress record every N steps")
    p.add_argument("--steps", type=int, default=1000000, help="stop after this many steps")
    p.add_argument("--boot-s", type=float, default=0.0, help="loader start-up time after boot")
    p.add_argument("--fault", choices=FAULTS, default="none")
    p.add_argument("--fault-at", type=int, default=20, help="step at which the fault starts")
    p.add_argument("--fault-rank", type=int, default=-1, help="rank with the fault (-1: all)")
    p.add_argument("--dump-every-s", type=float, default=0.5, help="watchdog_dump period while hung")
    p.add_argument("--csv-header", type=int, default=1)
    p.add_argument("--legacy", action="store_true", help="write one heartbeat.jsonl for all ranks")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    children = []
    for rank in range(a.ranks):
        pid = os.fork()
        if pid == 0:
            try:
                code = run_rank(a, rank)
            except Exception:
                traceback.print_exc()
                code = 1
            os._exit(code)
        children.append(pid)

    def forward(sig, _frame):
        for c in children:
            try:
                os.kill(c, sig)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    for c in children:
        while True:
            try:
                _, status = os.waitpid(c, 0)
                break
            except InterruptedError:
                continue
        code = os.waitstatus_to_exitcode(status)
        worst = worst or code
    sys.exit(worst if worst > 0 else 0)


def run_rank(a, rank):
    path = os.path.join(a.dir, "heartbeat.jsonl" if a.legacy else f"heartbeat_rank{rank}.jsonl")
    lock = threading.Lock()
    say = (lambda *x: None) if a.quiet else (lambda *x: print(f"[rank {rank}]", *x, flush=True))

    def beat(msg, step, **fields):
        now = time.time()
        rec = {"ts": now, "iso": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + "Z", "pid": os.getpid(),
               "rank": rank, "step": step, "msg": msg}
        rec.update(fields)
        with lock:
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def on_usr1(_sig, _frame):
        dump = os.path.join(a.dir, f"stackdump_{int(time.time())}_rank{rank}.txt")
        with open(dump, "w") as f:
            f.write("stack dump requested by SIGUSR1\n")
        say("SIGUSR1: stacks dumped to", dump)

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))

    faulty = a.fault_rank in (-1, rank)
    beat("boot", 0, phase="start")
    time.sleep(a.boot_s)
    beat("fineweb_loader_ready", 0, dt=a.boot_s)
    loss = 10.0
    step = 0
    for step in range(1, a.steps + 1):
        if os.path.exists(os.path.join(a.dir, ".HALT")):
            say("[train] HALT file detected — stopping gracefully.")
            with open(os.path.join(a.dir, f".sim_stopped_rank{rank}"), "w") as f:
                f.write(f"{step}\n")
            return 0
        fault = faulty and a.fault != "none" and step >= a.fault_at
        if fault and a.fault in ("heartbeat_stall", "watchdog_dump"):
            say("hanging at step", step)
            while True:  # the training loop is stuck; only the trainer's watchdog thread runs
                time.sleep(a.dump_every_s)
                if a.fault == "watchdog_dump":
                    beat("watchdog_dump", step, path=os.path.join(a.dir, f"watchdog_stackdump_{int(time.time())}.txt"))
        if fault and a.fault == "crash":
            say("crashing at step", step)
            os._exit(1)
        beat("beat", step, phase="step_start")
        delay = a.step_s * (4 if (fault and a.fault == "straggler") else 1)
        time.sleep(delay)
        loss = loss * 0.995 + 0.001
        if step % a.log_every == 0:
            rec = {
                "loss": float("nan") if (fault and a.fault == "nonfinite_loss") else (3.0 if fault and a.fault == "loss_flatline" else loss),
                "toks_per_s": 0.0 if (fault and a.fault == "throughput_flatline") else 12000.0 + 50 * math.sin(step),
                "dt_fetch_s": 5.0 if (fault and a.fault == "fetch_stall") else 0.010 + 0.001 * (step % 3),
                "grad_norm": 0.0 if (fault and a.fault == "zero_grad") else 1.0 + 0.1 * math.cos(step),
                "gpu_mem_alloc": 30000 + rank, "gpu_mem_reserved": 40000,
                "gate_entropy_mean": 0.05 if (fault and a.fault == "gate_collapse") else 0.9,
                "gate_entropy_min": 0.5, "gate_max_gate": 0.99 if (fault and a.fault == "gate_collapse") else 0.4,
                "gate_collapse_frac": 0.0, "gate_branch_shares": [0.3, 0.3, 0.4],
            }
            beat("progress", step, **rec)
            if rank == 0:
                csv = os.path.join(a.dir, "training.csv")
                new = not os.path.exists(csv)
                with open(csv, "a") as f:
                    if new and a.csv_header:
                        f.write("step,loss,lr,toks_per_s\n")
                    f.write(f"{step},{'nan' if math.isnan(rec['loss']) else rec['loss']},0.0003,{rec['toks_per_s']}\n")
        beat("step_end", step, phase="end")
    say("finished", step, "steps")
    return 0


if __name__ == "__main__":
    main()
