#!/usr/bin/env python3
"""Renders bench/measure.py's JSON as the Markdown tables of BENCHMARKS.md (median [min-max])."""

import json
import sys

MIB = 1024.0


def mmm(x, fmt="{:.1f}", scale=1.0):
    if not x:
        return "n/a"
    m, lo, hi = x["median"] * scale, x["min"] * scale, x["max"] * scale
    s = fmt.format(m)
    if x["n"] > 1:
        s += f" [{fmt.format(lo)}-{fmt.format(hi)}]"
    return s


def main():
    d = json.load(open(sys.argv[1]))
    out = []
    w = out.append
    if "sizes_bytes" in d:
        s = d["sizes_bytes"]
        w("### Size\n")
        w("| artefact | bytes | MiB |")
        w("|---|---:|---:|")
        for k, v in s.items():
            if isinstance(v, int):
                w(f"| {k} | {v:,} | {v / MIB / MIB:.2f} |")
        w("")
    if "idle_rss_kib" in d:
        w("### Idle resident memory, 30 s after start (MiB, median [min-max])\n")
        w("| client | tokens | VmRSS | RssAnon | threads | all files written after (s) | runs |")
        w("|---|---:|---:|---:|---:|---:|---:|")
        for k, v in d["idle_rss_kib"].items():
            who, n = k.split("|")
            w(f"| {who} | {n} | {mmm(v['VmRSS'], '{:.2f}', 1 / MIB)} | {mmm(v['RssAnon'], '{:.2f}', 1 / MIB)} | "
              f"{v['Threads']['median']:.0f} | {mmm(v['all_files_s'], '{:.2f}')} | {v['VmRSS']['n']} |")
        w("")
    if "many_tokens_kib" in d:
        m = d["many_tokens_kib"]
        w(f"### {m['tokens']:,} tokens, three token servers, two layouts: 6.5 s after /readyz 200 "
          "(MiB, median [min-max])\n")
        w("| build | token server | outputs | VmRSS | RssAnon | VmHWM (peak) | threads | /readyz 200 after (s) |")
        w("|---|---|---|---:|---:|---:|---:|---:|")
        for k, v in m["rows"].items():
            who, server, layout = k.split("|")
            w(f"| {who} | {server} | {layout} | {mmm(v['VmRSS'], '{:.2f}', 1 / MIB)} | "
              f"{mmm(v['RssAnon'], '{:.2f}', 1 / MIB)} | {mmm(v['VmHWM'], '{:.2f}', 1 / MIB)} | "
              f"{v['Threads']['median']:.0f} | {mmm(v['ready_s'], '{:.2f}')} |")
        w("")
    if "cold_start_ms" in d:
        w("### Cold start (ms, median [min-max])\n")
        w("| what | harness (spawn to condition) | hyperfine (spawn to exit) |")
        w("|---|---:|---:|")
        hf = d.get("hyperfine_ms", {})
        pair = {"token-vendor once: file written, process exited": "token-vendor once",
                "curl POST (the floor): process exited": "curl POST",
                "reference client (Python): first token file": "reference client --once"}
        for k, v in d["cold_start_ms"].items():
            h = hf.get(pair.get(k, ""), None)
            w(f"| {k} | {mmm(v, '{:.2f}')} | {mmm(h, '{:.2f}') if h else ''} |")
        w("")
    if "cpu_s_per_1000_refreshes" in d:
        c = d["cpu_setup"]
        w(f"### CPU per 1,000 refreshes ({c['tokens']} tokens, expires_in {c['expires_in']} s, "
          f"{c['seconds']:.0f} s windows; CPU-seconds, median [min-max])\n")
        w("| client | user | system | total | refreshes counted per run |")
        w("|---|---:|---:|---:|---:|")
        for k, v in d["cpu_s_per_1000_refreshes"].items():
            w(f"| {k} | {mmm(v['user'], '{:.3f}')} | {mmm(v['sys'], '{:.3f}')} | {mmm(v['total'], '{:.3f}')} | "
              f"{mmm(v['refreshes'], '{:.0f}')} |")
        w("")
    if "readyz_wrk" in d:
        w("### /readyz under wrk (token-vendor on core 1, wrk -t1 on core 0; median [min-max])\n")
        w("| connections | requests/s | p50 (ms) | p99 (ms) | non-2xx |")
        w("|---:|---:|---:|---:|---:|")
        for c, v in d["readyz_wrk"].items():
            w(f"| {c} | {mmm(v['rps'], '{:,.0f}')} | {mmm(v['p50_ms'], '{:.3f}')} | {mmm(v['p99_ms'], '{:.3f}')} | "
              f"{v['non2xx']['max']:.0f} |")
        w("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
