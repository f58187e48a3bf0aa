#!/usr/bin/env python3
"""Side-by-side figures for BENCHMARKS.md: token-vendor, the reference client (Python), and curl (the floor).

Run by bench/run after it has installed the tools and built the binaries; stdlib only. Writes the
tables as Markdown to stdout and the raw samples as JSON to --json.

Layout on the 2-core machine: the process under test runs on core 1; the token server, this harness
and load generators (wrk) run on core 0. Outputs go to a tmpfs.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUT_CORE = 1
AUX_CORE = 0
CLIENT_ID = "bench-client"
SECRET = "bench-secret"
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def popen_on(core, argv, **kw):
    """Starts argv on one core. The child inherits this process's affinity, so no preexec_fn is needed and
    Python keeps its fast vfork path: the measured start-up is the program's, not the harness's."""
    os.sched_setaffinity(0, {core})
    try:
        return subprocess.Popen(argv, **kw)
    finally:
        os.sched_setaffinity(0, {AUX_CORE})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def med(xs):
    """median [min, max] of a list of numbers."""
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


class TokenServer:
    """A token endpoint on the auxiliary core: bench/token_server.rs (`binary`), or with `python=True`
    bench/py_token_server.py (ThreadingHTTPServer, as an operator might write one). `delay_ms` answers every token
    request that much later (an identity provider answering in 100 ms)."""

    def __init__(self, binary, expires_in, delay_ms=0, python=False):
        argv = ([sys.executable, os.path.join(ROOT, "bench/py_token_server.py")] if python else [binary])
        argv += ["--expires-in", str(expires_in), "--delay-ms", str(delay_ms)]
        self.p = popen_on(AUX_CORE, argv, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline().strip()
        if not line.startswith("READY "):
            raise SystemExit(f"token server did not start: {line!r}")
        self.url = line.split()[1]
        self.base = self.url.rsplit("/", 1)[0]

    def issued(self):
        with urllib.request.urlopen(self.base + "/stats") as r:
            return json.load(r)["issued"]

    def stop(self):
        self.p.terminate()
        self.p.wait()


# The three token servers of the many-token memory figures (issue 15): name -> TokenServer keyword arguments.
MEMORY_SERVERS = {
    "fast (bench/token_server.rs)": {},
    "Python ThreadingHTTPServer": {"python": True},
    "slow (answers after 100 ms)": {"delay_ms": 100},
}
# Output layouts: all outputs in one directory, or every output in its own directory (as the chart mounts them).
LAYOUTS = ("one directory", "a directory per token")


def write_config(d, url, n, port, secret_file, fmt="raw", per_dir=False, key_file=None):
    """A config with n tokens against url, one output each, JSON logs at info; returns its path. With key_file, the
    tokens use private_key_jwt (a fresh assertion signed with that key per request) instead of the secret."""
    lines = [
        f'listen: "127.0.0.1:{port}"',
        "log: {format: json, level: info}",
        "refresh: {window: [0.70, 0.85], min_backoff: 1s, max_backoff: 60s}",
        "tokens:",
    ]
    for i in range(n):
        out = os.path.join(d, f"t{i:04d}")
        if per_dir:
            os.mkdir(out)
            out = os.path.join(out, "token")
        lines += [
            f"  - name: t{i:04d}",
            f"    token_url: {url}",
            f"    client_id: {CLIENT_ID}",
            (f"    auth_method: private_key_jwt\n    private_key_file: {key_file}" if key_file
             else f"    client_secret_file: {secret_file}"),
            f"    outputs: [{{path: {out}, format: {fmt}}}]",
        ]
    path = os.path.join(d, "config.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def proc_status(pid):
    """VmRSS, RssAnon, RssFile, VmHWM (KiB) and Threads from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def memory_at_many(binary, url, n, d, secret_file, per_dir, settle=6.5, ready_within=180):
    """Starts `binary run` with n tokens on the SUT core, waits for /readyz 200 (every token written and valid),
    waits `settle` seconds and reads /proc/PID/status: VmRSS, RssAnon and VmHWM (the peak, i.e. the first fill)."""
    port = free_port()
    cfg = write_config(d, url, n, port, secret_file, per_dir=per_dir)
    p = popen_on(SUT_CORE, [binary, "run", "--config", cfg], stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        ready = f"http://127.0.0.1:{port}/readyz"
        while http_status(ready) != 200:
            if p.poll() is not None:
                raise SystemExit(f"{binary} exited with {p.returncode} before /readyz turned 200")
            if time.monotonic() - t0 > ready_within:
                raise SystemExit(f"{binary}: /readyz not 200 within {ready_within} s with {n} tokens")
            time.sleep(0.05)
        ready_s = time.monotonic() - t0
        time.sleep(settle)
        r = proc_status(p.pid)
        r["ready_s"] = ready_s
        return r
    finally:
        Bench.stop(p)


class Bench:
    def __init__(self, args):
        self.a = args
        self.tv = os.path.join(ROOT, "target/release/token-vendor")
        self.server_bin = os.path.join(ROOT, "target/release/examples/bench_token_server")
        self.py = os.path.join(ROOT, ".tools/bench-venv/bin/python")
        self.ref = os.path.join(ROOT, "bench/reference_client.py")
        self.static = os.path.join(ROOT, "target/static/x86_64-unknown-linux-gnu/release/token-vendor")
        self.tmp = args.tmpfs
        self.secret_file = os.path.join(self.tmp, "client_secret")
        with open(self.secret_file, "w") as f:
            f.write(SECRET)
        self.results = {}

    # --- helpers ------------------------------------------------------------------------------
    def fresh_dir(self, name):
        d = tempfile.mkdtemp(prefix=name + "-", dir=self.tmp)
        return d

    def config(self, d, url, n, port, fmt="raw"):
        return write_config(d, url, n, port, self.secret_file, fmt)

    def spawn_tv(self, cfg, mode="run", binary=None):
        return popen_on(SUT_CORE, [binary or self.tv, mode, "--config", cfg], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)

    def spawn_ref(self, url, out, n=1, once=False):
        cmd = [self.py, self.ref, "--token-url", url, "--client-id", CLIENT_ID,
               "--client-secret-file", self.secret_file, "--out", out, "--tokens", str(n)]
        if once:
            cmd.append("--once")
        return popen_on(SUT_CORE, cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def stop(p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    @staticmethod
    def rss(pid):
        return proc_status(pid)

    @staticmethod
    def cpu(pid):
        """user and system seconds of the whole process, exited threads included."""
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / TICK, int(fields[12]) / TICK

    @staticmethod
    def wait_for(cond, timeout, what):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            time.sleep(0.05)
        raise SystemExit(f"timed out waiting for {what}")

    @staticmethod
    def http_status(url):
        return http_status(url)

    # --- 1. idle memory ---------------------------------------------------------------------
    def idle_rss(self):
        """VmRSS and RssAnon 30 s after start (or, for a client still starting then, 5 s after its last file)."""
        srv = TokenServer(self.server_bin, 3600)
        samples = {}
        started = []
        try:
            batches = [[], []]
            for rep in range(self.a.runs):
                for n in (1, 10, 1000):
                    batches[0].append(("token-vendor", n, rep))
                    if os.path.exists(self.static):
                        batches[0].append(("token-vendor, static build (as in the image)", n, rep))
                for n in self.a.ref_tokens:
                    # 1,000 reference clients take minutes of CPU to start: one run, on its own.
                    if n < 1000:
                        batches[0].append(("reference client (Python)", n, rep))
                    elif rep == 0:
                        batches[1].append(("reference client (Python)", n, rep))
            for batch in batches:
                procs = []
                for who, n, rep in batch:
                    d = self.fresh_dir(f"rss-{n}")
                    if who == "token-vendor":
                        p = self.spawn_tv(self.config(d, srv.url, n, free_port()))
                    elif who.startswith("token-vendor, static"):
                        p = self.spawn_tv(self.config(d, srv.url, n, free_port()), binary=self.static)
                    else:
                        p = self.spawn_ref(srv.url, os.path.join(d, "t"), n)
                    started.append(p)
                    procs.append({"who": who, "n": n, "p": p, "d": d, "t0": time.monotonic(), "done": None})
                log(f"idle RSS: {len(procs)} processes started")
                pending = list(procs)
                deadline = time.monotonic() + 600
                while pending:
                    if time.monotonic() > deadline:
                        raise SystemExit("idle RSS: clients did not write their files within 10 minutes")
                    now = time.monotonic()
                    for x in list(pending):
                        if x["p"].poll() is not None:
                            raise SystemExit(f"{x['who']} ({x['n']} tokens) exited early with {x['p'].returncode}")
                        if x["done"] is None and len([f for f in os.listdir(x["d"]) if f.startswith("t")]) >= x["n"]:
                            x["done"] = now - x["t0"]
                        if x["done"] is not None and now - x["t0"] >= max(30.0, x["done"] + 5.0):
                            r = self.rss(x["p"].pid)
                            r["all_files_s"] = x["done"]
                            r["sampled_at_s"] = now - x["t0"]
                            samples.setdefault(f"{x['who']}|{x['n']}", []).append(r)
                            self.stop(x["p"])
                            shutil.rmtree(x["d"])
                            pending.remove(x)
                    time.sleep(0.2)
        finally:
            for p in started:
                self.stop(p)
            srv.stop()
        out = {}
        for key, xs in samples.items():
            out[key] = {k: med([x[k] for x in xs]) for k in ("VmRSS", "RssAnon", "Threads", "all_files_s",
                                                               "sampled_at_s")}
        self.results["idle_rss_kib"] = out

    # --- 1b. many tokens: three token servers, two layouts ------------------------------------------
    def many_tokens(self):
        """1,000 tokens against each of MEMORY_SERVERS, in each of LAYOUTS: VmRSS, RssAnon and VmHWM read 6.5 s
        after /readyz turned 200 (issue 15: how an operator measured it). One process at a time."""
        n = self.a.many_tokens
        res = {}
        # The targets at 1,000 tokens are the glibc-dynamic build's (the static one is smaller, see idle_rss).
        builds = [("token-vendor", self.tv)]
        for server, kw in MEMORY_SERVERS.items():
            srv = TokenServer(self.server_bin, 3600, **kw)
            try:
                for who, binary in builds:
                    for layout in LAYOUTS:
                        rows = []
                        for _ in range(self.a.many_runs):
                            d = self.fresh_dir("many")
                            rows.append(memory_at_many(binary, srv.url, n, d, self.secret_file,
                                                       per_dir=layout != LAYOUTS[0]))
                            shutil.rmtree(d)
                        key = f"{who}|{server}|{layout}"
                        res[key] = {k: med([r[k] for r in rows]) for k in rows[0]}
                        log(f"{n} tokens: {key}: VmRSS {res[key]['VmRSS']['median']} KiB, "
                            f"VmHWM {res[key]['VmHWM']['median']} KiB")
            finally:
                srv.stop()
        self.results["many_tokens_kib"] = {"tokens": n, "rows": res}

    # --- 2. cold start --------------------------------------------------------------------------
    def cold_start(self):
        srv = TokenServer(self.server_bin, 3600)
        runs = self.a.start_runs
        res = {}

        def timed(start, done, cleanup):
            t0 = time.perf_counter()
            p = start()
            while not done(p):
                time.sleep(0.0002)  # yields core 0 to the token server between polls
            t = time.perf_counter() - t0
            cleanup(p)
            return t

        def exists(path):
            return lambda p: os.path.exists(path)

        try:
            kinds = {}
            for i in range(runs):
                d = self.fresh_dir("start")
                port = free_port()
                cfg = self.config(d, srv.url, 1, port)
                out = os.path.join(d, "t0000")
                kinds.setdefault("token-vendor run: first token file", []).append(
                    timed(lambda: self.spawn_tv(cfg), exists(out), self.stop))
                shutil.rmtree(d)

                d = self.fresh_dir("start")
                cfg = self.config(d, srv.url, 1, port)
                ready = f"http://127.0.0.1:{port}/readyz"
                kinds.setdefault("token-vendor run: /readyz 200", []).append(
                    timed(lambda: self.spawn_tv(cfg), lambda p: self.http_status(ready) == 200, self.stop))
                shutil.rmtree(d)

                d = self.fresh_dir("start")
                cfg = self.config(d, srv.url, 1, port)
                out = os.path.join(d, "t0000")
                kinds.setdefault("token-vendor once: file written, process exited", []).append(
                    timed(lambda: self.spawn_tv(cfg, "once"), lambda p: p.poll() is not None, lambda p: None))
                assert os.path.exists(out)
                shutil.rmtree(d)

                d = self.fresh_dir("start")
                out = os.path.join(d, "token")
                curl = ["curl", "-s", "-X", "POST", "-u", f"{CLIENT_ID}:{SECRET}",
                        "-d", "grant_type=client_credentials", "-o", out, srv.url]
                kinds.setdefault("curl POST (the floor): body on disk", []).append(
                    timed(lambda: popen_on(SUT_CORE, curl), exists(out),
                          lambda p: p.wait()))
                shutil.rmtree(d)

                d = self.fresh_dir("start")
                out = os.path.join(d, "token")
                kinds.setdefault("curl POST (the floor): process exited", []).append(
                    timed(lambda: popen_on(SUT_CORE, curl),
                          lambda p: p.poll() is not None, lambda p: None))
                shutil.rmtree(d)

                if i < self.a.ref_start_runs:
                    d = self.fresh_dir("start")
                    out = os.path.join(d, "token")
                    kinds.setdefault("reference client (Python): first token file", []).append(
                        timed(lambda: self.spawn_ref(srv.url, out), exists(out), self.stop))
                    shutil.rmtree(d)
            for k, xs in kinds.items():
                res[k] = med([x * 1000 for x in xs])
            self.results["hyperfine_ms"] = self.hyperfine(srv)
        finally:
            srv.stop()
        self.results["cold_start_ms"] = res

    def hyperfine(self, srv):
        """hyperfine's view of the exit-based start-ups (process start to exit), as a cross-check."""
        d = self.fresh_dir("hyperfine")
        cfg = self.config(d, srv.url, 1, free_port())
        out = os.path.join(d, "token")
        cmds = {
            "token-vendor once": f"{self.tv} once --config {cfg}",
            "curl POST": f"curl -s -X POST -u {CLIENT_ID}:{SECRET} -d grant_type=client_credentials -o {out} {srv.url}",
            "reference client --once": f"{self.py} {self.ref} --token-url {srv.url} --client-id {CLIENT_ID} "
                                       f"--client-secret-file {self.secret_file} --out {out} --once",
        }
        js = os.path.join(d, "hyperfine.json")
        argv = ["taskset", "-c", str(SUT_CORE), "hyperfine", "-N", "--warmup", "3", "--runs",
                str(self.a.start_runs), "--export-json", js]
        for name, cmd in cmds.items():
            argv += ["-n", name, cmd]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(js) as f:
            data = json.load(f)
        return {r["command"]: {"median": r["median"] * 1000, "min": r["min"] * 1000, "max": r["max"] * 1000,
                               "n": len(r["times"])} for r in data["results"]}

    # --- 3. CPU per 1,000 refreshes -----------------------------------------------------------
    def cpu_per_refresh(self):
        n = self.a.cpu_tokens
        res = {}
        srv = TokenServer(self.server_bin, self.a.short_lifetime)
        try:
            key = os.path.join(self.tmp, "rs256.pem")
            subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            whos = ("token-vendor", "token-vendor, config in its own directory (as the chart mounts it)",
                    "token-vendor, private_key_jwt RS256 (2048-bit key)", "reference client (Python)")
            rows = {who: [] for who in whos}
            # Rounds, not client after client: the machine's speed drifts by tens of percent over minutes (a shared
            # VM), and each round gives every client the same minute.
            for _ in range(self.a.cpu_runs):
                for who in whos:
                    d = self.fresh_dir("cpu")
                    if who == "token-vendor":
                        p = self.spawn_tv(self.config(d, srv.url, n, free_port()))
                    elif who.startswith("token-vendor, config in its own"):
                        # The other rows keep the config beside the outputs (the layout of every earlier run): there
                        # the config watcher wakes for every output and state write.
                        cfg = os.path.join(d, "conf", "config.yaml")
                        os.mkdir(os.path.dirname(cfg))
                        os.rename(self.config(d, srv.url, n, free_port()), cfg)
                        p = self.spawn_tv(cfg)
                    elif who.startswith("token-vendor, private_key_jwt"):
                        p = self.spawn_tv(write_config(d, srv.url, n, free_port(), self.secret_file, key_file=key))
                    else:
                        p = self.spawn_ref(srv.url, os.path.join(d, "token"), n)
                    time.sleep(3)  # start-up done, refreshing steadily
                    u0, s0 = self.cpu(p.pid)
                    i0 = srv.issued()
                    time.sleep(self.a.cpu_seconds)
                    u1, s1 = self.cpu(p.pid)
                    i1 = srv.issued()
                    if p.poll() is not None:
                        raise SystemExit(f"{who} exited during the CPU run")
                    self.stop(p)
                    shutil.rmtree(d)
                    k = (i1 - i0) / 1000
                    rows[who].append({"refreshes": i1 - i0, "user": (u1 - u0) / k, "sys": (s1 - s0) / k,
                                      "total": (u1 - u0 + s1 - s0) / k})
            for who in whos:
                res[who] = {key: med([r[key] for r in rows[who]]) for key in rows[who][0]}
                log(f"cpu: {who}: {res[who]['total']}")
        finally:
            srv.stop()
        self.results["cpu_s_per_1000_refreshes"] = res
        self.results["cpu_setup"] = {"tokens": n, "expires_in": self.a.short_lifetime,
                                     "seconds": self.a.cpu_seconds}

    # --- 4. /readyz under wrk -----------------------------------------------------------------
    def readyz(self):
        srv = TokenServer(self.server_bin, 3600)
        res = {}
        try:
            d = self.fresh_dir("wrk")
            port = free_port()
            p = self.spawn_tv(self.config(d, srv.url, 1, port))
            url = f"http://127.0.0.1:{port}/readyz"
            self.wait_for(lambda: self.http_status(url) == 200, 10, "/readyz 200")
            for c in self.a.wrk_connections:
                rows = []
                for _ in range(self.a.wrk_runs):
                    out = subprocess.run(
                        ["wrk", "-t1", f"-c{c}", f"-d{self.a.wrk_seconds}s", "--latency", url],
                        capture_output=True, text=True, check=True).stdout
                    rows.append(parse_wrk(out))
                res[str(c)] = {k: med([r[k] for r in rows]) for k in rows[0]}
                log(f"wrk -c{c}: {res[str(c)]['rps']['median']:.0f} req/s")
            self.stop(p)
        finally:
            srv.stop()
        self.results["readyz_wrk"] = res

    # --- 5. sizes -----------------------------------------------------------------------------
    def sizes(self):
        static = os.path.join(ROOT, "target/static/x86_64-unknown-linux-gnu/release/token-vendor")
        res = {"release (stripped)": os.path.getsize(self.tv)}
        if os.path.exists(static):
            res["static, as the Dockerfile builds it"] = os.path.getsize(static)
        for k, path in (("release (stripped)", self.tv), ("static, as the Dockerfile builds it", static)):
            if os.path.exists(path):
                res[k + ": file says"] = subprocess.run(["file", "-b", path], capture_output=True,
                                                        text=True).stdout.strip() if shutil.which("file") else ""
        venv = os.path.join(ROOT, ".tools/bench-venv")
        total = 0
        for dirpath, _, files in os.walk(venv):
            for f in files:
                fp = os.path.join(dirpath, f)
                if not os.path.islink(fp):
                    total += os.path.getsize(fp)
        res["reference client venv (Python packages, not the interpreter)"] = total
        self.results["sizes_bytes"] = res


def parse_wrk(out):
    def dur(s):
        m = re.match(r"([\d.]+)(us|ms|s)", s)
        v, u = float(m.group(1)), m.group(2)
        return v * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = dur(re.search(r"\n\s+50%\s+(\S+)", out).group(1))
    p99 = dur(re.search(r"\n\s+99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non2xx": int(errors.group(1)) if errors else 0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tmpfs", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--start-runs", type=int, default=20)
    ap.add_argument("--ref-start-runs", type=int, default=10)
    ap.add_argument("--ref-tokens", type=int, nargs="*", default=[1, 10, 1000])
    ap.add_argument("--many-tokens", type=int, default=1000)
    ap.add_argument("--many-runs", type=int, default=3)
    ap.add_argument("--cpu-tokens", type=int, default=10)
    ap.add_argument("--cpu-runs", type=int, default=5)
    ap.add_argument("--wrk-runs", type=int, default=3)
    ap.add_argument("--short-lifetime", type=float, default=1.1)
    ap.add_argument("--cpu-seconds", type=float, default=20)
    ap.add_argument("--wrk-connections", type=int, nargs="*", default=[1, 10, 50])
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--only", nargs="*", default=["sizes", "start", "rss", "many", "cpu", "wrk"])
    a = ap.parse_args()
    os.sched_setaffinity(0, {AUX_CORE})
    b = Bench(a)
    steps = {"sizes": b.sizes, "start": b.cold_start, "rss": b.idle_rss, "many": b.many_tokens, "cpu": b.cpu_per_refresh,
             "wrk": b.readyz}
    for name in a.only:
        log(f"--- {name}")
        steps[name]()
        with open(a.json, "w") as f:
            json.dump(b.results, f, indent=1)
    print(json.dumps(b.results, indent=1))


if __name__ == "__main__":
    main()
