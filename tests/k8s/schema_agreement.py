#!/usr/bin/env python3
"""The chart and `token-vendor check` agree on every value in TABLE (scripts/validate-k8s).

  schema_agreement.py CHART_DIR BINARY WORKDIR

For each row, the chart's values are tests/k8s/tokens-values.yaml with the row's changes:
  chart  `helm template` with values.schema.json and the template guards: accepted or refused;
  check  the real `token-vendor check` on the config the chart renders for the base values,
         with the same value at the config key it maps to (a refused value has no rendering):
         accepted or refused;
  and, when the chart accepts, `token-vendor check` on the config the chart actually rendered
  (credential files hold the rendered Secret's values): it must accept too. This is the class
  of bug the table exists for: a value the schema lets through and the sidecar refuses (exit 2).

The chart and check must agree. The only exception is a row with `known`: the chart refuses
a value the binary accepts (never the other way round), for the reason given; such a row
passes when both agree as well, and says so. Every row also states the chart's expected
verdict, so a change on both sides at once is noticed.

Why a table and not a schema generated from the Rust types: the refusals that matter (a
world-readable mode, http:// to a non-loopback host, a duration below a bound, a reserved
form parameter) live in the validation code, not in the serde types: the raw `mode` is a
String, so a schema generated from the types would accept "0644" as the old one did. The
values also differ in shape (camelCase, `file` under the token's directory, credentials in
a Secret, gid from the pod's fsGroup). The table holds the schema, the guards in
_helpers.tpl and the binary to one behaviour.
"""
import copy
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import k8s_checks as kc  # noqa: E402

DELETE = object()
TOKEN_ROOT = "/var/run/tokens"


def row(rid, changes, expect, known=None, cfg=None):
    """changes: [(values path, value)]; expect: 'ok' or 'refused' (the chart's verdict);
    cfg: explicit config changes [(config path, value)] where the mapping is not 1:1."""
    return {"id": rid, "changes": changes, "expect": expect, "known": known, "cfg": cfg}


M = "tokens.0.outputs.0.mode"
U = "tokens.0.tokenUrl"
TABLE = [
    # File modes: the binary wants an owner-readable mode with no bits for others.
    row("mode 0640", [(M, "0640")], "ok"),
    row("mode 0600", [(M, "0600")], "ok"),
    row("mode 0440", [(M, "0440")], "ok"),
    row("mode 0644 (world-readable)", [(M, "0644")], "refused"),
    row("mode 0604", [(M, "0604")], "refused"),
    row("mode 0777", [(M, "0777")], "refused"),
    row("mode \"640\" (no leading 0)", [(M, "640")], "ok"),
    row("mode 640 (a YAML number)", [(M, 640)], "refused"),
    row("mode \"0o640\"", [(M, "0o640")], "ok"),
    row("mode 0200 (owner cannot read)", [(M, "0200")], "refused"),
    row("mode 1640 (sticky)", [(M, "1640")], "refused"),
    row("mode \"\"", [(M, "")], "refused"),
    row("outputMode 0644", [("outputMode", "0644")], "refused"),
    row("outputMode 0600", [("outputMode", "0600")], "ok"),
    # Token names.
    row("name a", [("tokens.0.name", "a")], "ok"),
    row("name of 63 characters", [("tokens.0.name", "x" * 63)], "ok"),
    row("name of 64 characters", [("tokens.0.name", "x" * 64)], "refused"),
    row("name with a capital", [("tokens.0.name", "Api")], "refused"),
    row("name starting with -", [("tokens.0.name", "-api")], "refused"),
    row("name ending with -", [("tokens.0.name", "api-")], "ok"),
    row("name with _", [("tokens.0.name", "a_b")], "refused"),
    row("name twice", [("tokens.1", "COPY0")], "refused"),
    # URLs.
    row("tokenUrl https with port and query", [(U, "https://idp.corp:8443/oauth2/token?x=1")], "ok"),
    row("tokenUrl upper-case scheme", [(U, "HTTPS://idp.corp/t")], "ok"),
    row("tokenUrl http to a remote host", [(U, "http://idp.corp/t")], "refused"),
    row("tokenUrl http to localhost", [(U, "http://localhost:8080/t")], "ok"),
    row("tokenUrl http to 127.0.0.1", [(U, "http://127.0.0.1:9000/t")], "ok"),
    row("tokenUrl http to [::1]", [(U, "http://[::1]/t")], "ok"),
    row("tokenUrl http with allowInsecureHttp", [(U, "http://idp.corp/t"), ("tokens.0.http", {"allowInsecureHttp": True})], "ok"),
    row("tokenUrl ftp", [(U, "ftp://idp.corp/t")], "refused"),
    row("tokenUrl with user info", [(U, "https://user:pw@idp.corp/t")], "refused"),
    row("tokenUrl port 99999", [(U, "https://idp.corp:99999/t")], "refused"),
    row("tokenUrl not a URL", [(U, "not-a-url")], "refused"),
    row("tokenUrl without host", [(U, "https://")], "refused"),
    row("tokenUrl bad IPv4", [(U, "https://1.2.3.4.5/t")], "refused"),
    row("tokenUrl with a space", [(U, "https://idp.corp/a b")], "refused",
        known="the binary percent-encodes a space in the path; the chart refuses it as a typo"),
    row("tokenUrl http://127.1 (short loopback form)", [(U, "http://127.1/t")], "refused",
        known="the chart knows only the usual loopback spellings (localhost, 127.x.x.x, [::1])"),
    row("baseUrl https with a path", [(U, DELETE), ("tokens.0.baseUrl", "https://tenant.benchling.com/anything")], "ok"),
    row("baseUrl http to a remote host", [(U, DELETE), ("tokens.0.baseUrl", "http://tenant.corp")], "refused"),
    row("tokenUrl and baseUrl both", [("tokens.0.baseUrl", "https://tenant.benchling.com")], "refused",
        known="the binary silently takes token_url; the chart asks for exactly one (reported to the lead)"),
    row("no tokenUrl nor baseUrl", [(U, DELETE)], "refused"),
    # Client authentication.
    row("authMethod client_secret_basic", [("tokens.0.authMethod", "client_secret_basic")], "ok"),
    row("authMethod client_secret_basic_raw", [("tokens.0.authMethod", "client_secret_basic_raw")], "ok"),
    row("authMethod client_secret_post", [("tokens.0.authMethod", "client_secret_post")], "ok"),
    row("authMethod in capitals", [("tokens.0.authMethod", "Client_Secret_Basic")], "refused"),
    row("authMethod client_secret_jwt (unknown)", [("tokens.0.authMethod", "client_secret_jwt")], "refused"),
    row("client_secret_basic_raw with ':' in the client id",
        [("tokens.0.authMethod", "client_secret_basic_raw"), ("tokens.0.clientId", "a:b")], "refused",
        known="issue 11 makes this a config error in the binary (another helper's change)"),
    row("clientSecret with + / % : & =", [("tokens.0.clientSecret", "s3cr3t+/%:&=")], "ok"),
    row("clientSecret of one newline", [("tokens.0.clientSecret", "\n")], "refused"),
    row("clientId empty", [("tokens.0.clientId", "")], "refused"),
    # Request parameters.
    row("scope with spaces", [("tokens.0.scope", "orders:read orders:write")], "ok"),
    row("scope a number", [("tokens.0.scope", 5)], "refused"),
    row("audience", [("tokens.0.audience", "https://api.corp")], "ok"),
    row("resource a string", [("tokens.0.resource", "https://api.corp")], "ok"),
    row("resource a list", [("tokens.0.resource", ["https://a.corp", "https://b.corp"])], "ok"),
    row("resource an empty list", [("tokens.0.resource", [])], "ok"),
    row("resource a number", [("tokens.0.resource", 5)], "refused"),
    row("resource [\"\"]", [("tokens.0.resource", [""])], "refused",
        known="the binary sends an empty resource=; RFC 8707 wants an absolute URI"),
    row("params", [("tokens.0.params", {"tenant": "acme"})], "ok"),
    row("params grant_type (reserved)", [("tokens.0.params", {"grant_type": "password"})], "refused"),
    row("params scope (reserved)", [("tokens.0.params", {"scope": "x"})], "refused"),
    row("params value a number", [("tokens.0.params", {"n": 1})], "refused"),
    # Durations.
    row("defaultLifetime 1h", [("tokens.0.defaultLifetime", "1h")], "ok"),
    row("defaultLifetime 1.5h", [("tokens.0.defaultLifetime", "1.5h")], "ok"),
    row("defaultLifetime 1h 30m", [("tokens.0.defaultLifetime", "1h 30m")], "ok"),
    row("defaultLifetime 90 seconds", [("tokens.0.defaultLifetime", "90 seconds")], "ok"),
    row("defaultLifetime 2s (the minimum)", [("tokens.0.defaultLifetime", "2s")], "ok"),
    row("defaultLifetime 2000ms", [("tokens.0.defaultLifetime", "2000ms")], "ok"),
    row("defaultLifetime 1999ms", [("tokens.0.defaultLifetime", "1999ms")], "refused"),
    row("defaultLifetime 1s", [("tokens.0.defaultLifetime", "1s")], "refused"),
    row("defaultLifetime \"30\" (no unit)", [("tokens.0.defaultLifetime", "30")], "refused"),
    row("defaultLifetime 30 (a number)", [("tokens.0.defaultLifetime", 30)], "refused"),
    row("defaultLifetime 1x (unknown unit)", [("tokens.0.defaultLifetime", "1x")], "refused"),
    row("http.timeout 15s", [("tokens.0.http", {"timeout": "15s"})], "ok"),
    row("http.timeout 0s", [("tokens.0.http", {"timeout": "0s"})], "refused"),
    row("http.connectTimeout 0ms", [("tokens.0.http", {"connectTimeout": "0ms"})], "refused"),
    row("http.connectTimeout 500ms", [("tokens.0.http", {"connectTimeout": "500ms"})], "ok"),
    # TLS files.
    row("http.clientCertFile and clientKeyFile",
        [("tokens.0.http", {"clientCertFile": "/etc/tv-tls/tls.crt", "clientKeyFile": "/etc/tv-tls/tls.key"})], "ok"),
    row("http.clientCertFile without clientKeyFile", [("tokens.0.http", {"clientCertFile": "/etc/tv-tls/tls.crt"})], "refused"),
    row("http.caFile", [("tokens.0.http", {"caFile": "/etc/tv-tls/ca.crt"})], "ok"),
    row("http.caFile relative", [("tokens.0.http", {"caFile": "tv-tls/ca.crt"})], "refused"),
    row("http.allowInsecureHttp \"true\" (a string)", [("tokens.0.http", {"allowInsecureHttp": "true"})], "refused"),
    # Outputs.
    row("format raw", [("tokens.0.outputs.0.format", "raw")], "ok"),
    row("format header", [("tokens.0.outputs.0.format", "header")], "ok"),
    row("format env", [("tokens.0.outputs.0.format", "env")], "ok"),
    row("format omitted (raw)", [("tokens.0.outputs.0.format", DELETE)], "ok"),
    row("format yaml", [("tokens.0.outputs.0.format", "yaml")], "refused"),
    row("format RAW", [("tokens.0.outputs.0.format", "RAW")], "refused"),
    row("file in a subdirectory", [("tokens.0.outputs.0.file", "sub/token")], "ok"),
    row("file twice", [("tokens.0.outputs.1.file", "token")], "refused"),
    row("file ../escape", [("tokens.0.outputs.0.file", "../escape")], "refused",
        known="chart layout rule: a token's files stay in its own directory; the binary takes any path"),
    row("no outputs", [("tokens.0.outputs", [])], "refused"),
    # uid/gid: the files' group is the pod's fsGroup.
    row("fsGroup 65532", [("podSecurityContext.fsGroup", 65532)], "ok"),
    row("fsGroup 0", [("podSecurityContext.fsGroup", 0)], "ok"),
    row("fsGroup 2147483647", [("podSecurityContext.fsGroup", 2147483647)], "ok"),
    row("fsGroup -1", [("podSecurityContext.fsGroup", -1)], "refused"),
    row("fsGroup 4294967296", [("podSecurityContext.fsGroup", 4294967296)], "refused"),
    row("fsGroup 3000000000", [("podSecurityContext.fsGroup", 3000000000)], "refused",
        known="Kubernetes refuses IDs above 2147483647; the binary takes any u32"),
    row("supplementalGroups without fsGroup",
        [("podSecurityContext", {"supplementalGroups": [1000]})], "ok",
        cfg=[("tokens.*.outputs.*.gid", 1000)]),
    # The rest of the config.
    row("listen [::]:8099", [("config.listen", "[::]:8099")], "ok"),
    row("listen 0.0.0.0:9100", [("config.listen", "0.0.0.0:9100")], "ok"),
    row("listen localhost:8099", [("config.listen", "localhost:8099")], "refused"),
    row("listen :8099", [("config.listen", ":8099")], "refused"),
    row("listen port 99999", [("config.listen", "[::]:99999")], "refused"),
    row("listen 999.1.1.1:80", [("config.listen", "999.1.1.1:80")], "refused"),
    row("listen port 0", [("config.listen", "[::]:0")], "refused",
        known="chart rule: the probes and the metrics Service need a fixed port"),
    row("log.level info", [("config.log.level", "info")], "ok"),
    row("log.level INFO", [("config.log.level", "INFO")], "ok"),
    row("log.level directives", [("config.log.level", "info,token_vendor=debug")], "ok"),
    row("log.level ==", [("config.log.level", "==")], "refused"),
    row("log.level verbose", [("config.log.level", "verbose")], "refused",
        known="the binary reads an unknown word as a tracing target and logs nothing (reported to the lead)"),
    row("log.format text", [("config.log.format", "text")], "ok"),
    row("log.format xml", [("config.log.format", "xml")], "refused"),
    row("refresh.window [0.5, 0.75]", [("config.refresh.window", [0.5, 0.75])], "ok"),
    row("refresh.window [0.9, 0.5]", [("config.refresh.window", [0.9, 0.5])], "refused"),
    row("refresh.window [0.5, 1.0]", [("config.refresh.window", [0.5, 1.0])], "refused"),
    row("refresh.window [0, 0.5]", [("config.refresh.window", [0, 0.5])], "refused"),
    row("refresh.minBackoff 10ms", [("config.refresh.minBackoff", "10ms")], "ok"),
    row("refresh.minBackoff 5ms", [("config.refresh.minBackoff", "5ms")], "refused"),
    row("refresh.maxBackoff below minBackoff", [("config.refresh.maxBackoff", "500ms")], "refused"),
    row("reload.pollInterval 100ms", [("config.reload.pollInterval", "100ms")], "ok"),
    row("reload.pollInterval 50ms", [("config.reload.pollInterval", "50ms")], "refused"),
    row("onExit remove", [("config.onExit", "remove")], "ok"),
    row("onExit delete", [("config.onExit", "delete")], "refused"),
]


# --- applying changes ----------------------------------------------------------------------


def set_path(obj, path, value):
    parts = path.split(".")
    for i, p in enumerate(parts[:-1]):
        key = int(p) if isinstance(obj, list) else p
        if isinstance(obj, dict) and key not in obj:
            obj[key] = {}
        obj = obj[key]
    last = parts[-1]
    if isinstance(obj, list):
        idx = int(last)
        if value is DELETE:
            del obj[idx]
        elif idx == len(obj):
            obj.append(value)
        else:
            obj[idx] = value
    elif value is DELETE:
        obj.pop(last, None)
    else:
        obj[last] = value


def snake(k):
    return re.sub(r"([A-Z])", r"_\1", k).lower()


def config_changes(changes, values):
    """The config keys the chart values map to: [(config path, value)] and credential file contents."""
    out, creds = [], {}
    for path, value in changes:
        parts = path.split(".")
        if parts[0] == "config":
            out.append((".".join(snake(p) for p in parts[1:]), value))
        elif parts[0] == "outputMode":
            out.append(("tokens.*.outputs.*.mode", value))
        elif parts[0] == "podSecurityContext" and parts[1:] == ["fsGroup"]:
            out.append(("tokens.*.outputs.*.gid", value))
        elif parts[0] == "tokens" and len(parts) == 2:
            if value == "COPY0":
                out.append((path, "COPY0"))
            else:
                raise ValueError(f"no mapping for {path}")
        elif parts[0] == "tokens":
            i, key = parts[1], parts[2]
            name = values["tokens"][int(i)]["name"]
            if key in ("clientId", "clientSecret"):
                creds[(int(i), snake(key))] = value
            elif key == "outputs" and len(parts) == 5 and parts[4] == "file":
                v = value if value is DELETE else f"{TOKEN_ROOT}/{name}/{value}"
                out.append((f"tokens.{i}.outputs.{parts[3]}.path", v))
            elif key == "http" and isinstance(value, dict):
                out.append((f"tokens.{i}.http", {snake(k): v for k, v in value.items()}))
            else:
                out.append((".".join(parts[:2] + [snake(p) for p in parts[2:]]), value))
        else:
            raise ValueError(f"no mapping for {path}")
    return out, creds


def apply_config(cfg, path, value):
    if path.startswith("tokens.*"):
        rest = path[len("tokens.*."):]
        for t in cfg["tokens"]:
            if rest.startswith("outputs.*."):
                for o in t["outputs"]:
                    o[rest[len("outputs.*."):]] = value
            else:
                set_path(t, rest, value)
        return
    if value == "COPY0":
        cfg["tokens"].append(copy.deepcopy(cfg["tokens"][0]))
        return
    set_path(cfg, path, value)


# --- running the two sides -------------------------------------------------------------------


def helm_template(chart, values, workdir, rid):
    vf = os.path.join(workdir, "values.yaml")
    with open(vf, "w") as f:
        json.dump(values, f, indent=1)  # JSON is YAML in which every string is quoted
    p = subprocess.run(["helm", "template", "tv", chart, "-f", vf], capture_output=True, text=True)
    return p.returncode == 0, p.stdout, p.stderr.strip()


def write_config_tree(cfg, docs, workdir, creds_override):
    """Writes cfg under workdir with every absolute path moved there; credential files from the
    rendered Secret (or the overrides); TLS files as throwaway PEMs. Returns the config path."""
    if os.path.exists(workdir):
        shutil.rmtree(workdir)
    os.makedirs(workdir)
    secret = next((d for d in docs if d.get("kind") == "Secret"), {}) or {}
    data = secret.get("stringData") or {}
    cfg = kc.rewrite_paths(cfg, workdir)
    for i, t in enumerate(cfg.get("tokens") or []):
        for k in ("client_id", "client_secret"):
            p = t.get(f"{k}_file")
            if not p:
                continue
            os.makedirs(os.path.dirname(p), exist_ok=True)
            if (i, k) in creds_override:
                content = creds_override[(i, k)]
            else:
                content = data.get(f"{os.path.basename(os.path.dirname(p))}.{k}", f"dummy-{k}")
            with open(p, "w") as f:
                f.write(str(content))
        for k, pem in (("ca_file", "cert"), ("client_cert_file", "cert"), ("client_key_file", "key")):
            p = (t.get("http") or {}).get(k)
            if isinstance(p, str) and p.startswith(workdir):
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "wb") as f:
                    f.write(kc.test_pem(os.path.dirname(workdir))[pem])
    os.makedirs(workdir + TOKEN_ROOT, exist_ok=True)
    path = os.path.join(workdir, "config.yaml")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
    return path


def run_check(binary, cfg_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}  # no proxy variables from outside
    p = subprocess.run([binary, "check", "--config", cfg_path], capture_output=True, text=True, env=env,
                       cwd=os.path.dirname(cfg_path))
    msg = " ".join(l.strip() for l in (p.stdout + p.stderr).splitlines() if "problem" not in l)[:240]
    return p.returncode == 0, msg


def rendered_config(docs):
    cm = next(d for d in docs if d.get("kind") == "ConfigMap" and "config.yaml" in (d.get("data") or {}))
    return yaml.safe_load(cm["data"]["config.yaml"])


def main():
    chart, binary, workdir = (os.path.abspath(a) for a in sys.argv[1:4])
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(HERE, "tokens-values.yaml")) as f:
        base = yaml.safe_load(f)
    ok, out, err = helm_template(chart, base, workdir, "base")
    if not ok:
        print(f"FAIL the base values do not render: {err}")
        return 1
    base_docs = [d for d in yaml.safe_load_all(out) if d]
    base_cfg = rendered_config(base_docs)
    bad = 0
    width = max(len(r["id"]) for r in TABLE)
    print(f"{'row':<{width}}  chart    check    rendered  verdict")
    counts = {"ok": 0, "refused": 0}
    for r in TABLE:
        values = copy.deepcopy(base)
        for path, value in r["changes"]:
            if value == "COPY0":
                values["tokens"].append(copy.deepcopy(values["tokens"][0]))
            else:
                set_path(values, path, value)
        chart_ok, out, err = helm_template(chart, values, workdir, r["id"])
        if r["cfg"] is not None:
            cfg_changes, creds = r["cfg"], {}
        else:
            cfg_changes, creds = config_changes(r["changes"], base)
        cfg = copy.deepcopy(base_cfg)
        for path, value in cfg_changes:
            apply_config(cfg, path, value)
        check_ok, check_msg = run_check(binary, write_config_tree(cfg, base_docs, os.path.join(workdir, "mapped"), creds))
        rendered = "-"
        problems = []
        if chart_ok:
            docs = [d for d in yaml.safe_load_all(out) if d]
            r_ok, r_msg = run_check(binary, write_config_tree(rendered_config(docs), docs,
                                                              os.path.join(workdir, "rendered"), {}))
            rendered = "ok" if r_ok else "refused"
            if not r_ok:
                problems.append(f"the chart renders a config that check refuses: {r_msg}")
        cv = "ok" if chart_ok else "refused"
        kv = "ok" if check_ok else "refused"
        counts[cv] += 1
        if cv != r["expect"]:
            problems.append(f"the chart's verdict is {cv}, the table expects {r['expect']}"
                            + (f" ({err.splitlines()[-1] if err else ''})" if err else ""))
        verdict = "agree"
        if chart_ok != check_ok:
            if r["known"] and not chart_ok and check_ok:
                verdict = "known: " + r["known"]
            else:
                problems.append(f"chart {cv} but check {kv}"
                                + (f"; check says: {check_msg}" if not check_ok else f"; helm says: {err[-300:]}"))
        elif r["known"]:
            verdict = "agree (the known difference is gone: drop `known`)"
        print(f"{r['id']:<{width}}  {cv:<8} {kv:<8} {rendered:<9} {verdict if not problems else 'FAIL'}")
        for p in problems:
            bad += 1
            print(f"  FAIL {r['id']}: {p}")
    print(f"{len(TABLE)} rows ({counts['ok']} accepted, {counts['refused']} refused by the chart), "
          f"{sum(1 for r in TABLE if r['known'])} known chart-stricter rows, {bad} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
