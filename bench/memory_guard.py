#!/usr/bin/env python3
"""The memory guard of scripts/test (issue 15): the release binary with 1,000 tokens, every output in its own
directory (as the chart mounts them), against a slow-ish token endpoint (Python's ThreadingHTTPServer answering
after 20 ms, a new connection per request). Fails when RssAnon (6.5 s after /readyz turned 200) or VmHWM (the peak,
i.e. the first fill) passes its bound. Memory, not time: a loaded machine makes the run slower, not bigger.

    bench/memory_guard.py BINARY

The measuring code is bench/measure.py's (memory_at_many), the one bench/run uses for BENCHMARKS.md.
"""

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402

TOKENS = 1000
DELAY_MS = 20
# Bounds, KiB: what this guard measured at the second memory pass of issue 15 (commit 16a2b6b, glibc-dynamic release
# build, 2026-12-03): RssAnon 7.58 MiB, VmHWM 14.49 MiB (VmRSS 12.98 MiB), plus ~18% headroom. The first pass
# measured RssAnon 14.89 / VmHWM 20.12 here (its bounds were 17 / 23 MiB); the landed main before issue 15
# measured RssAnon 25.4 MiB and VmHWM 33.0 MiB.
MAX_RSS_ANON_KIB = 9 * 1024
MAX_VM_HWM_KIB = 17 * 1024


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: bench/memory_guard.py BINARY")
    binary = os.path.abspath(sys.argv[1])
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"memory guard: {binary} is not an executable: the guard did NOT run")
    # The harness and the token server share core 0, the binary runs on core 1 (as in bench/run), when there are two.
    if os.cpu_count() < 2:
        measure.SUT_CORE = measure.AUX_CORE = 0
    os.sched_setaffinity(0, {measure.AUX_CORE})
    tmp = tempfile.mkdtemp(prefix="tv-memory-guard-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    srv = None
    try:
        secret = os.path.join(tmp, "client_secret")
        with open(secret, "w") as f:
            f.write(measure.SECRET)
        srv = measure.TokenServer(None, 3600, delay_ms=DELAY_MS, python=True)
        out = os.path.join(tmp, "outputs")
        os.mkdir(out)
        r = measure.memory_at_many(binary, srv.url, TOKENS, out, secret, per_dir=True)
        issued = srv.issued()
    finally:
        if srv:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    mib = lambda kib: f"{kib / 1024:.2f} MiB"  # noqa: E731
    print(f"memory guard: {binary}, {TOKENS} tokens, a directory per output, Python token endpoint answering after "
          f"{DELAY_MS} ms ({issued} requests); /readyz 200 after {r['ready_s']:.1f} s; 6.5 s later: "
          f"VmRSS {mib(r['VmRSS'])}, RssAnon {mib(r['RssAnon'])} (bound {mib(MAX_RSS_ANON_KIB)}), "
          f"VmHWM {mib(r['VmHWM'])} (bound {mib(MAX_VM_HWM_KIB)}), {r['Threads']} threads")
    over = []
    if r["RssAnon"] > MAX_RSS_ANON_KIB:
        over.append(f"RssAnon {mib(r['RssAnon'])} > {mib(MAX_RSS_ANON_KIB)}")
    if r["VmHWM"] > MAX_VM_HWM_KIB:
        over.append(f"VmHWM {mib(r['VmHWM'])} > {mib(MAX_VM_HWM_KIB)}")
    if over:
        print("memory guard: FAILED: " + "; ".join(over))
        sys.exit(1)
    print("memory guard: passed")


if __name__ == "__main__":
    main()
