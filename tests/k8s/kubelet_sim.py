#!/usr/bin/env python3
"""A kubelet-like run of one pod from the chart's rendering, with the real binary.

  kubelet_sim.py RENDERED --kind Job|Deployment --binary PATH --oidc-server PATH --workdir DIR

What it does, as the kubelet would for the first pod of that kind in RENDERED:
  1. lays out the pod's volumes under WORKDIR: the ConfigMap and Secret volumes the way the
     kubelet's atomic writer does (..<timestamp>/ dirs, a ..data symlink, per-file symlinks),
     with their defaultMode and the pod's fsGroup as group; the token emptyDir as mode 2777
     with the fsGroup (what the kubelet does for an fsGroup pod);
  2. rewrites the rendered config: absolute paths into WORKDIR, listen to 127.0.0.1:<free
     port>, every token URL to a local oidc-server.mjs that knows the rendered Secret's
     credentials (ttl 6 s);
  3. native mode: starts the sidecar ("run"), polls its startupProbe with the rendered path,
     period, timeout and failure threshold, and starts the app only once it passes;
     classic mode: runs the "once" init container to completion (within its --timeout),
     then starts the app and the sidecar and polls the readinessProbe;
  4. the consumer (as the app container's UID, the pod's fsGroup as supplementary group)
     reads every token file once: the first read must find a valid token (introspected at
     the token server: active, not expired), then runs the app container's own command;
  5. stops the sidecar with SIGTERM (as the kubelet does after a Job's app exits) and checks
     that it exits within terminationGracePeriodSeconds and honours on_exit.
Every child is started with PR_SET_PDEATHSIG and killed by PID in a finally block.
Runs as root to switch UIDs like the kubelet; otherwise it runs everything as the current
user and says so.
"""
import argparse
import base64
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8s_checks as kc  # noqa: E402

PR_SET_PDEATHSIG = 1
LIBC = ctypes.CDLL(None, use_errno=True)
ROOT_USER = os.geteuid() == 0
CHILDREN = []
PROBLEMS = []


def note(msg):
    print(f"kubelet-sim: {msg}", flush=True)


def problem(msg):
    PROBLEMS.append(msg)
    print(f"FAIL kubelet-sim: {msg}", flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv, name, logdir, uid=None, gid=None, groups=(), env=None, stdout=None):
    """Starts argv as uid/gid (when root), dying with us; logs to logdir/name.log."""

    def pre():
        os.setsid()  # its own process group: kill_all() also reaches its children (sleep, ...)
        if ROOT_USER and uid is not None:
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
        LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    log = open(os.path.join(logdir, f"{name}.log"), "wb")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout or log, stderr=log,
                         env=env if env is not None else {"PATH": "/usr/bin:/bin"},
                         preexec_fn=pre, cwd="/")
    p.name, p.logpath = name, log.name
    CHILDREN.append(p)
    note(f"started {name} (pid {p.pid}): {' '.join(argv)[:160]}")
    return p


def tail(p, n=25):
    try:
        with open(p.logpath, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join(f"    | {ln}" for ln in lines[-n:])
    except OSError:
        return "    | (no log)"


def kill_all():
    """SIGKILL to every child's process group (the child's PID), whether or not it exited."""
    for p in CHILDREN:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for p in CHILDREN:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            note(f"pid {p.pid} ({p.name}) did not die after SIGKILL")


# --- volumes ------------------------------------------------------------------------------


def atomic_volume(dirpath, files, mode, gid):
    """Lays out files {relpath: bytes} like the kubelet's atomic writer."""
    os.makedirs(dirpath, exist_ok=True)
    ts = os.path.join(dirpath, "..2026_01_01_00_00_00.000000001")
    for rel, data in files.items():
        p = os.path.join(ts, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        if ROOT_USER and gid is not None:
            os.chown(p, 0, gid)
    for root, dirs, _ in os.walk(ts):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    os.chmod(ts, 0o755)
    os.symlink(os.path.basename(ts), os.path.join(dirpath, "..data"))
    for top in {rel.split("/")[0] for rel in files}:
        os.symlink(os.path.join("..data", top), os.path.join(dirpath, top))


def host(root, path):
    return root.rstrip("/") + path


def secret_data(docs, name):
    s = kc.find_doc(docs, "Secret", name)
    if s is None:
        return None
    out = {k: str(v).encode() for k, v in (s.get("stringData") or {}).items()}
    out.update({k: base64.b64decode(v) for k, v in (s.get("data") or {}).items()})
    return out


# --- probes -----------------------------------------------------------------------------


def http_probe(port, path, timeout):
    """kubelet semantics: 200-399 is success; anything else, or no answer in time, fails."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return 200 <= r.status < 400, f"HTTP {r.status}"
    except urllib.error.HTTPError as e:
        return False, f"HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        return False, f"{type(e).__name__}: {getattr(e, 'reason', e)}"


def run_probe(proc, probe, port, what, max_wait):
    """Polls like the kubelet until success or failureThreshold failures. Returns bool.
    Gives up after max_wait seconds even if the rendered budget is longer (said so)."""
    path = probe["httpGet"]["path"]
    period = probe.get("periodSeconds", 10)
    timeout = probe.get("timeoutSeconds", 1)
    threshold = probe.get("failureThreshold", 3)
    time.sleep(probe.get("initialDelaySeconds", 0))
    failures, start = 0, time.monotonic()
    while True:
        t0 = time.monotonic()
        if proc.poll() is not None:
            problem(f"{what}: the sidecar exited with status {proc.returncode} before its probe passed\n{tail(proc)}")
            return False
        ok, detail = http_probe(port, path, timeout)
        if ok:
            note(f"{what} passed after {failures} failure(s), {time.monotonic() - start:.2f} s "
                 f"(GET {path}, period {period}s, failureThreshold {threshold})")
            return True
        failures += 1
        if time.monotonic() - start > max_wait:
            problem(f"{what} still failing after {failures} probes in {max_wait} s (last: {detail}); the rendered "
                    f"budget is {threshold} x {period} s, but a local token server answers in milliseconds, "
                    f"so this run gives up earlier\n{tail(proc)}")
            return False
        if failures >= threshold:
            problem(f"{what} failed {failures} times (last: {detail}); the kubelet would restart the sidecar\n{tail(proc)}")
            return False
        time.sleep(max(0.0, period - (time.monotonic() - t0)))


# --- the run ----------------------------------------------------------------------------


def introspect(token_url, client_id, client_secret, token):
    url = token_url.rstrip("/") + "/introspection"
    cred = base64.b64encode(f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(client_secret, safe='')}".encode()).decode()
    req = urllib.request.Request(url, data=urllib.parse.urlencode({"token": token}).encode(),
                                 headers={"Authorization": f"Basic {cred}",
                                          "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("--kind", default="Job")
    ap.add_argument("--binary", required=True)
    ap.add_argument("--oidc-server", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--max-wait", type=float, default=30.0,
                    help="give up on a probe after this many seconds (the local token server is fast)")
    ap.add_argument("--token-host", default="127.0.0.1",
                    help="host name in the token URL (localhost: the binary resolves a name)")
    args = ap.parse_args()
    try:
        run(args)
    except Exception as e:  # a crash of the harness is a failure, not a traceback only
        problem(f"harness error: {type(e).__name__}: {e}")
        raise
    finally:
        kill_all()
    if PROBLEMS:
        print(f"kubelet-sim: {len(PROBLEMS)} problem(s); logs in {args.workdir}/logs")
        sys.exit(1)
    print("kubelet-sim: ok")


def run(args):
    docs = kc.load_docs(args.rendered)
    pods = [(d, p) for d, p, _ in kc.workloads(docs) if d.get("kind") == args.kind]
    if not pods:
        problem(f"no {args.kind} in {args.rendered}")
        return
    doc, pod = pods[0]
    note(f"pod of {kc.ident(doc)}")
    inits, mains = pod.get("initContainers") or [], pod.get("containers") or []
    sidecar = next(c for c in inits + mains if kc.is_tv(c) and kc.tv_role(c) == "run")
    native = sidecar in inits and sidecar.get("restartPolicy") == "Always"
    once = next((c for c in inits if kc.is_tv(c) and kc.tv_role(c) == "once"), None)
    app = next(c for c in mains if not kc.is_tv(c))
    psc = pod.get("securityContext") or {}
    fsgroup = psc.get("fsGroup")
    tv_uid, tv_gid = kc.eff("runAsUser", sidecar, pod), kc.eff("runAsGroup", sidecar, pod)
    app_uid = kc.eff("runAsUser", app, pod)
    app_gid = kc.eff("runAsGroup", app, pod) or app_uid
    groups = [fsgroup] if fsgroup is not None else []
    if not ROOT_USER:
        note("SKIP uid/gid switching: not root, so every process runs as the current user "
             "(file modes and the fsGroup are not exercised)")
    note(f"{'native' if native else 'classic'} mode; sidecar uid {tv_uid} gid {tv_gid}, "
         f"app uid {app_uid} gid {app_gid}, fsGroup {fsgroup}")

    work = os.path.abspath(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    root, logs = os.path.join(work, "root"), os.path.join(work, "logs")
    os.makedirs(root)
    os.makedirs(logs)
    for d in (work, root):
        os.chmod(d, 0o755)
    if ROOT_USER:
        d = work
        while d != "/":
            d = os.path.dirname(d)
            if not os.stat(d).st_mode & 0o001:
                problem(f"{d} is not searchable by other users: the pod's non-root UIDs cannot reach {work}")
                return

    # The rendered config, rewritten for this machine.
    cfg, _ = kc.pod_config(docs, pod, sidecar, kc.ident(doc))
    if cfg is None:
        problem("no config for the sidecar")
        return
    rendered_port = kc.listen_port(cfg["listen"])
    for pname in ("startupProbe", "readinessProbe", "livenessProbe"):
        pr = sidecar.get(pname)
        if pr and kc.probe_port(sidecar, pr) != rendered_port:
            problem(f"{pname} probes port {kc.probe_port(sidecar, pr)}, listen is {cfg['listen']}")
    port = free_port()
    cfg = kc.rewrite_paths(cfg, root)
    cfg["listen"] = f"127.0.0.1:{port}"

    # Volumes.
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounted = {}
    for c in inits + mains:
        for m in c.get("volumeMounts") or []:
            mounted.setdefault(m["name"], m["mountPath"])
    secrets = {}
    for name, mpath in mounted.items():
        v = volumes.get(name) or {}
        d = host(root, mpath)
        if "emptyDir" in v:
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o2777 if fsgroup is not None else 0o777)
            if ROOT_USER and fsgroup is not None:
                os.chown(d, 0, fsgroup)
        elif "configMap" in v:
            continue  # written below, once the config is rewritten
        elif "secret" in v:
            data = secret_data(docs, v["secret"]["secretName"])
            if data is None:
                problem(f"Secret {v['secret']['secretName']} is not in the rendering")
                return
            items = v["secret"].get("items")
            files = {i["path"]: data[i["key"]] for i in items} if items else dict(data)
            atomic_volume(d, files, v["secret"].get("defaultMode", 0o644), fsgroup)
            secrets[mpath] = {k: val.decode() for k, val in files.items()}
        else:
            problem(f"volume {name}: unsupported kind {sorted(v)}")
    cfg_path = kc.config_arg(sidecar)
    cfg_mount = kc.mount_for(sidecar, cfg_path)
    cm_vol = volumes[cfg_mount["name"]]["configMap"]
    rel = os.path.relpath(cfg_path, cfg_mount["mountPath"])

    # The token server knows the rendered Secret's credentials.
    clients = {}
    for t in cfg["tokens"]:
        cid = open(t["client_id_file"]).read()
        csec = open(t["client_secret_file"]).read()
        auth = "client_secret_post" if t.get("auth_method") == "client_secret_post" else "client_secret_basic"
        if cid in clients and clients[cid]["client_secret"] != csec:
            problem(f"client id {cid} is used with two different secrets")
        clients[cid] = {"client_id": cid, "client_secret": csec, "auth": auth}
    oidc_cfg = os.path.join(work, "oidc.json")
    with open(oidc_cfg, "w") as f:
        json.dump({"port": 0, "ttl": 6, "clients": list(clients.values())}, f)
    oidc_log = os.path.join(logs, "oidc-server.stdout")
    server = spawn(["node", os.path.abspath(args.oidc_server), oidc_cfg], "oidc-server", logs,
                   env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, stdout=open(oidc_log, "wb"))
    token_url, deadline = None, time.monotonic() + 30
    while time.monotonic() < deadline and token_url is None:
        m = re.search(r"^READY (\S+)$", open(oidc_log).read(), re.M)
        if m:
            token_url = m.group(1)
        elif server.poll() is not None:
            break
        else:
            time.sleep(0.05)
    if token_url is None:
        problem(f"oidc-server did not print READY within 30 s\n{tail(server)}")
        return
    token_url = token_url.replace("//127.0.0.1:", f"//{args.token_host}:", 1)
    note(f"token server {token_url}")
    for t in cfg["tokens"]:
        t.pop("base_url", None)
        t["token_url"] = token_url
        t.setdefault("http", {})["allow_insecure_http"] = True
    atomic_volume(host(root, cfg_mount["mountPath"]), {rel: yaml.safe_dump(cfg, sort_keys=False).encode()},
                  cm_vol.get("defaultMode", 0o644), fsgroup)

    def tv_argv(c):
        return [os.path.abspath(args.binary)] + [kc.rewrite_paths(a, root) if a.startswith("/") else a
                                                  for a in (c.get("args") or [])]

    env = {"PATH": "/usr/bin:/bin"}
    for e in sidecar.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]

    # Init containers (classic), then the sidecar.
    if once is not None:
        targs = once.get("args") or []
        timeout = 60
        if "--timeout" in targs:
            m = re.fullmatch(r"(\d+)s", targs[targs.index("--timeout") + 1])
            timeout = int(m.group(1)) if m else 60
        t0 = time.monotonic()
        p = spawn(tv_argv(once), "init-once", logs, tv_uid, tv_gid, groups, env)
        try:
            p.wait(timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            problem(f"'once' did not exit within its --timeout {timeout}s + 10 s\n{tail(p)}")
            return
        if p.returncode != 0:
            problem(f"'once' init container exited with status {p.returncode}\n{tail(p)}")
            return
        note(f"'once' init container completed in {time.monotonic() - t0:.2f} s")

    tv = spawn(tv_argv(sidecar), "sidecar", logs, tv_uid, tv_gid, groups, env)
    if native:
        if not run_probe(tv, sidecar["startupProbe"], port, "startupProbe", args.max_wait):
            return
    # The app starts now (native: after the startup probe; classic: after the init container).
    outputs = [(t, o) for t in cfg["tokens"] for o in t["outputs"]]
    files = [o["path"] for _, o in outputs]
    script = 'for f; do printf "\\036%s\\037" "$f"; cat -- "$f" || exit 1; done'
    consumer = spawn(["/bin/sh", "-c", script, "sh"] + files, "consumer", logs, app_uid, app_gid, groups,
                     stdout=subprocess.PIPE)
    out, _ = consumer.communicate(timeout=10)
    read_at = time.time()
    if consumer.returncode != 0:
        problem(f"the consumer (uid {app_uid}) could not read the token files on its first read "
                f"(status {consumer.returncode})\n{tail(consumer)}")
    else:
        contents = dict(re.findall(rb"\x1e([^\x1f]*)\x1f([^\x1e]*)", out, re.S))
        for t, o in outputs:
            data = contents.get(o["path"].encode(), b"").decode()
            check_output(t, o, data, token_url, read_at)
        note(f"the consumer read {len(files)} file(s) on its first read as uid {app_uid}")

    # The app container's own command, with its paths rewritten.
    mpaths = sorted({m["mountPath"].rstrip("/") for m in app.get("volumeMounts") or []}, key=len, reverse=True)
    pat = re.compile(r"(?<![\w/.-])(" + "|".join(re.escape(m) for m in mpaths) + r")(?=/|\b|$)") if mpaths else None

    def app_path(a):
        return pat.sub(lambda m: root + m.group(1), a) if pat else a

    cmd = [app_path(a) for a in (app.get("command") or []) + (app.get("args") or [])]
    if cmd:
        a = spawn(cmd, "app", logs, app_uid, app_gid, groups)
        try:
            a.wait(timeout=3)
            if args.kind in ("Job", "CronJob"):
                if a.returncode != 0:
                    problem(f"the app container's command exited with {a.returncode}\n{tail(a)}")
                else:
                    note(f"the app container's command completed: {open(a.logpath).read().strip()[:200]}")
            else:
                problem(f"the app container's command exited with {a.returncode} (it should keep running)\n{tail(a)}")
        except subprocess.TimeoutExpired:
            if args.kind in ("Job", "CronJob"):
                problem(f"the Job's app command did not finish in 3 s\n{tail(a)}")
            else:
                note(f"the app container is running after its first read: {open(a.logpath).read().strip()[:200]}")
                os.killpg(a.pid, signal.SIGKILL)

    if not native:
        probe = dict(sidecar["readinessProbe"], failureThreshold=30, periodSeconds=1)
        run_probe(tv, probe, port, "readinessProbe (polled every 1 s, up to 30)", args.max_wait)
    else:
        ok, detail = http_probe(port, sidecar["readinessProbe"]["httpGet"]["path"], 1)
        if not ok:
            problem(f"readinessProbe fails after startup: {detail}")
    ok, detail = http_probe(port, sidecar["livenessProbe"]["httpGet"]["path"], 1)
    if not ok:
        problem(f"livenessProbe fails: {detail}")

    # The kubelet stops the sidecar (after a Job's app exits, or on pod deletion).
    grace = pod.get("terminationGracePeriodSeconds", 30)
    t0 = time.monotonic()
    tv.send_signal(signal.SIGTERM)
    try:
        tv.wait(timeout=grace)
        note(f"the sidecar exited {time.monotonic() - t0:.2f} s after SIGTERM with status {tv.returncode}")
        if tv.returncode != 0:
            problem(f"the sidecar exited with status {tv.returncode} on SIGTERM (want 0)\n{tail(tv)}")
    except subprocess.TimeoutExpired:
        problem(f"the sidecar did not exit within terminationGracePeriodSeconds {grace} after SIGTERM\n{tail(tv)}")
        return
    left = [p for p in files if os.path.exists(p)]
    if cfg.get("on_exit", "keep") == "keep" and len(left) != len(files):
        problem(f"on_exit keep, but {len(files) - len(left)} token file(s) are gone after exit")
    if cfg.get("on_exit") == "remove" and left:
        problem(f"on_exit remove, but {left} remain after exit")


def check_output(t, o, data, token_url, read_at):
    what = f"token {t['name']} output {o['path']} ({o['format']})"
    if not data:
        problem(f"{what}: empty or missing on the first read")
        return
    st = os.stat(o["path"])
    want_mode = int(str(o.get("mode", "0640")), 8)
    if ROOT_USER and st.st_mode & 0o777 != want_mode:
        problem(f"{what}: mode {oct(st.st_mode & 0o777)}, want {oct(want_mode)}")
    if ROOT_USER and "gid" in o and st.st_gid != o["gid"]:
        problem(f"{what}: group {st.st_gid}, want {o['gid']}")
    if o["format"] != "raw":
        return
    token = data.strip()
    cid = open(t["client_id_file"]).read()
    csec = open(t["client_secret_file"]).read()
    try:
        info = introspect(token_url, cid, csec, token)
    except Exception as e:
        problem(f"{what}: introspection failed: {e}")
        return
    if not info.get("active"):
        problem(f"{what}: the token read first is not active at the token server: {info}")
    elif info.get("exp", 0) <= read_at:
        problem(f"{what}: the token read first had expired (exp {info.get('exp')}, read at {read_at:.0f})")
    else:
        note(f"{what}: valid on the first read ({info['exp'] - read_at:.1f} s left)")


if __name__ == "__main__":
    main()
