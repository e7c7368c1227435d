#!/usr/bin/env python3
"""Benchmark writer: appends heartbeat records to many rank files the way the trainer does.

For every file, `--rate` records per second (beat, progress, step_end, repeating), each one
written by opening the file in append mode, writing json.dumps(record) + "\\n" and closing it.
Files are given evenly spread phases so the writes do not arrive in bursts. Runs for
`--seconds` and then prints one JSON line: records written and this process's CPU seconds.
"""
import argparse
import json
import os
import random
import time


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", nargs="+", required=True, help="heartbeat_rank<N>.jsonl paths")
    p.add_argument("--rate", type=float, default=10.0, help="records per second per file")
    p.add_argument("--seconds", type=float, default=30.0)
    a = p.parse_args()
    n = len(a.files)
    period = 1.0 / a.rate
    rnd = random.Random(1)
    step = [1000] * n
    kind = [0] * n
    pid = os.getpid()
    t0 = time.time()
    end = t0 + a.seconds
    written = 0
    late_max = 0.0
    # event k goes to file k % n at t0 + (k / n) * period: an even spread
    k = 0
    while True:
        due = t0 + (k / n) * period
        if due >= end:
            break
        now = time.time()
        if due > now:
            time.sleep(due - now)
        else:
            late_max = max(late_max, now - due)
        i = k % n
        ts = time.time()
        rec = {"ts": ts, "iso": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + "+00:00", "pid": pid,
               "rank": i % 8, "step": step[i]}
        if kind[i] == 0:
            rec.update(msg="beat", phase="step_start", gpu_mem_alloc=30512, gpu_mem_reserved=40960)
        elif kind[i] == 1:
            rec.update(msg="progress", gpu_mem_alloc=30512, gpu_mem_reserved=40960,
                       loss=2.5 + rnd.random() * 0.01, lr=0.0003, toks_per_s=180000.0 + rnd.random() * 4000,
                       dt_fetch_s=0.002 + rnd.random() * 0.001, grad_norm=0.8 + rnd.random() * 0.4,
                       gate_entropy_mean=1.05, gate_entropy_min=0.92, gate_max_gate=0.43, gate_collapse_frac=0.0,
                       gate_branch_shares=[0.33, 0.33, 0.34], sel_k_mean=14.7, sel_k_max=16, sel_rows=8192,
                       sel_pct_at_max=0.12)
        else:
            rec.update(msg="step_end", phase="end", gpu_mem_alloc=30512, gpu_mem_reserved=40960)
            step[i] += 1
        kind[i] = (kind[i] + 1) % 3
        with open(a.files[i], "a") as f:
            f.write(json.dumps(rec) + "\n")
        written += 1
        k += 1
    t = os.times()
    print(json.dumps({"written": written, "wall_s": time.time() - t0, "cpu_s": t.user + t.system, "late_max_s": late_max}))


if __name__ == "__main__":
    main()
