#!/usr/bin/env python3
"""CPU per refresh of two token-vendor builds, side by side: the method behind BENCHMARKS.md's paired figures.

    bench/cpu_ab.py BASE_BINARY NEW_BINARY [--rounds 5] [--seconds 20] [--tokens 10] [--config-beside]

Run after bench/run has built the bench token server (target/release/examples/bench_token_server). This VM's speed
drifts by tens of percent over minutes, so runs one after the other compare poorly. Here four processes run at
once on one core, in the mirrored order BASE NEW NEW BASE (the first-started of two equal processes measured about
5% cheaper), against one fast token server on the other core, with the layout of BENCHMARKS.md section 3 (10 tokens,
`expires_in: 1.1`, JSON logs at info, one `raw` output each; the config in a directory of its own unless
--config-beside). Each round reads every process's CPU (user + system, /proc/PID/stat) and its successful
refreshes (its own /metrics) over the same window and prints ms per refresh; the last line is the median over rounds
of NEW / BASE. Stdlib only.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import (ROOT, SUT_CORE, Bench, TokenServer, free_port, popen_on, proc_status,  # noqa: E402
                     write_config)

SUCCESS = re.compile(r'^token_vendor_refresh_total\{[^}]*result="success"[^}]*\} (\d+)', re.M)


def refreshes(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return sum(int(n) for n in SUCCESS.findall(r.read().decode()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--tokens", type=int, default=10)
    ap.add_argument("--config-beside", action="store_true",
                    help="keep the config in the outputs' directory (the layout of BENCHMARKS.md's first CPU row)")
    a = ap.parse_args()
    server = os.path.join(ROOT, "target/release/examples/bench_token_server")
    for b in (a.base, a.new, server):
        if not os.access(b, os.X_OK):
            raise SystemExit(f"not an executable: {b} (bench/run builds the token server)")

    tmp = tempfile.mkdtemp(prefix="tv-cpu-ab-")
    secret = os.path.join(tmp, "client_secret")
    with open(secret, "w") as f:
        f.write("bench-secret")
    srv = TokenServer(server, 1.1)
    procs = []
    try:
        for i, (label, binary) in enumerate((("base", a.base), ("new", a.new), ("new", a.new), ("base", a.base))):
            d = os.path.join(tmp, f"p{i}")
            os.mkdir(d)
            port = free_port()
            cfg = write_config(d, srv.url, a.tokens, port, secret)
            if not a.config_beside:
                os.mkdir(os.path.join(d, "conf"))
                os.rename(cfg, os.path.join(d, "conf", "config.yaml"))
                cfg = os.path.join(d, "conf", "config.yaml")
            p = popen_on(SUT_CORE, [binary, "run", "--config", cfg], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
            procs.append((label, p, port))
        time.sleep(3)
        print(f"# ms of CPU per refresh; {a.tokens} tokens each, 4 processes on core {SUT_CORE}, {a.seconds:g} s rounds",
              flush=True)
        print("round  base(1)  new(2)  new(3)  base(4)  new/base", flush=True)
        ratios, per = [], {"base": [], "new": []}
        for r in range(1, a.rounds + 1):
            before = [(sum(Bench.cpu(p.pid)), refreshes(port)) for _, p, port in procs]
            time.sleep(a.seconds)
            after = [(sum(Bench.cpu(p.pid)), refreshes(port)) for _, p, port in procs]
            for _, p, _ in procs:
                if p.poll() is not None:
                    raise SystemExit(f"a token-vendor exited with {p.returncode} during round {r}")
            ms = [1000 * (c1 - c0) / max(n1 - n0, 1) for (c0, n0), (c1, n1) in zip(before, after)]
            base = (ms[0] + ms[3]) / 2
            new = (ms[1] + ms[2]) / 2
            per["base"].append(base)
            per["new"].append(new)
            ratios.append(new / base)
            print(f"{r:5d}  " + "  ".join(f"{m:7.3f}" for m in ms) + f"  {new / base:8.3f}", flush=True)
        print(f"median: base {statistics.median(per['base']):.3f} ms, new {statistics.median(per['new']):.3f} ms "
              f"per refresh; new/base {statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]; "
              f"RssAnon KiB at the end: " + ", ".join(str(proc_status(p.pid)["RssAnon"]) for _, p, _ in procs))
    finally:
        for _, p, _ in procs:
            Bench.stop(p)
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
