#!/usr/bin/env python3
"""The end-to-end test on the real cluster of scripts/k8s-up (issue 18): the chart installed with helm, six steps.

    KUBECONFIG=... python3 tests/k8s/e2e/run.py        (scripts/test's k8s-e2e stage runs it)

Needs: helm and kubectl on PATH (.tools/env.sh), node with tests/k8s/e2e/idp.mjs, the images localhost/token-vendor:e2e
and localhost/busybox:e2e in the node's containerd, the cluster's CA at .k8s/pki/ca.crt.

The test identity provider (idp.mjs) runs on the host at the node's bridge address; the pods reach it over the CNI
bridge with http:// (http.allowInsecureHttp: the test does not bring its own CA into the pods). Every step prints
its wall time; the first failure stops the run with the reason, the pods' state and the logs of the containers.
"""

import calendar
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CHART = os.path.join(ROOT, "charts", "token-vendor")
E2E = os.path.join(ROOT, "tests", "k8s", "e2e")
NS = "tv-e2e"
NODE_IP = "10.244.77.1"
APISERVER = "https://127.0.0.1:16443"
AUDIENCE = "e2e-idp"
TTL = 20  # expires_in of the IdP's tokens: token-vendor refreshes at 70-85% of it
TOKEN_LEN = 43  # the IdP's access tokens: 32 random bytes, base64url
IMAGE = {"repository": "localhost/token-vendor", "tag": "e2e", "pullPolicy": "Never"}
BUSYBOX = "localhost/busybox:e2e"


class Failed(Exception):
    pass


def run(*cmd, check=True, input=None):
    p = subprocess.run(cmd, capture_output=True, text=True, input=input)
    if check and p.returncode != 0:
        raise Failed(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return p.stdout


def kubectl(*args, **kw):
    return run("kubectl", *args, **kw)


def kjson(*args):
    return json.loads(kubectl(*args, "-o", "json"))


def wait(what, limit, cond, every=0.5):
    """Polls cond() until it returns something truthy; fails after `limit` seconds with what and the last error."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < limit:
        try:
            v = cond()
            if v:
                return v
        except Failed as e:
            last = e
        time.sleep(every)
    raise Failed(f"{what}: not reached within {limit} s" + (f"; last error: {last}" if last else ""))


def ensure(ok, message):
    if not ok:
        raise Failed(message)


def say(msg):
    print(f"    {msg}", flush=True)


class IdP:
    """idp.mjs on the node's bridge address; events() reads what it answered."""

    def __init__(self, tmp, secrets):
        self.events_path = os.path.join(tmp, "idp-events.jsonl")
        conf = {
            "host": NODE_IP,
            "port": 0,
            "ttl": TTL,
            "events": self.events_path,
            "clients": {"e2e-client": secrets},
            "kubernetes": {
                "issuer": APISERVER,
                "ca_file": os.path.join(ROOT, ".k8s", "pki", "ca.crt"),
                "audience": AUDIENCE,
                "subject": f"system:serviceaccount:{NS}:default",
                "assertion_client_id": "e2e-federated",
            },
        }
        path = os.path.join(tmp, "idp.json")
        with open(path, "w") as fh:
            json.dump(conf, fh)
        self.log = open(os.path.join(tmp, "idp.log"), "w")
        self.proc = subprocess.Popen(["node", os.path.join(E2E, "idp.mjs"), path], stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.proc.wait(timeout=10)
            raise Failed(f"idp.mjs did not start (exit {self.proc.returncode}): {open(self.log.name).read()}")
        self.url = line.split(" ", 1)[1]

    def events(self, **match):
        out = []
        try:
            with open(self.events_path) as fh:
                for line in fh:
                    e = json.loads(line)
                    if all(e.get(k) == v for k, v in match.items()):
                        out.append(e)
        except FileNotFoundError:
            pass
        return out

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def helm_install(release, chart, values, tmp):
    path = os.path.join(tmp, f"{release}-values.json")
    with open(path, "w") as fh:
        json.dump(values, fh, indent=1)
    run("helm", "install", release, chart, "-n", NS, "-f", path)


def pod_of(selector):
    pods = [p for p in kjson("get", "pods", "-n", NS, "-l", selector)["items"] if not p["metadata"].get("deletionTimestamp")]
    ensure(len(pods) == 1, f"expected one pod for {selector}, found {len(pods)}")
    return pods[0]


def rollout(name):
    kubectl("rollout", "status", f"deploy/{name}", "-n", NS, "--timeout=150s")


def statuses(pod):
    st = pod["status"]
    return {c["name"]: c for c in st.get("initContainerStatuses", []) + st.get("containerStatuses", [])}


def ts(s):
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


def diagnostics():
    print("---- diagnostics", flush=True)
    print(run("kubectl", "get", "pods,jobs", "-n", NS, "-o", "wide", check=False), flush=True)
    print(run("kubectl", "get", "events", "-n", NS, "--sort-by=.lastTimestamp", check=False)[-6000:], flush=True)
    for p in json.loads(run("kubectl", "get", "pods", "-n", NS, "-o", "json", check=False) or '{"items": []}')["items"]:
        for c in p["spec"].get("initContainers", []) + p["spec"]["containers"]:
            name = p["metadata"]["name"]
            print(f"---- logs {name} -c {c['name']}", flush=True)
            print(run("kubectl", "logs", "-n", NS, name, "-c", c["name"], "--tail=30", check=False), flush=True)


def main():
    timings = []
    secrets = {"v1": "e2e-secret-v1-" + os.urandom(8).hex(), "v2": "e2e-secret-v2-" + os.urandom(8).hex()}
    tmp = tempfile.mkdtemp(prefix="k8s-e2e.")
    idp = None

    def step(n, title, fn):
        print(f"--> step {n}: {title}", flush=True)
        t0 = time.monotonic()
        fn()
        dt = time.monotonic() - t0
        timings.append((n, title, dt))
        print(f"<-- step {n}: ok, {dt:.1f} s", flush=True)

    ctx = {}

    def s1():
        if run("kubectl", "get", "ns", NS, check=False):
            kubectl("delete", "ns", NS, "--wait=true", "--timeout=120s")
        kubectl("create", "ns", NS)
        kubectl("label", "ns", NS, "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/enforce-version=latest")
        say(f"namespace {NS}: pod-security.kubernetes.io/enforce=restricted")
        # The README's quick-start values, pointed at the test IdP, with the locally built images and the Job.
        helm_install(
            "tv",
            CHART,
            {
                "image": IMAGE,
                "example": {"enabled": True, "image": BUSYBOX},
                "exampleJob": {"enabled": True, "image": BUSYBOX},
                "tokens": [
                    {
                        "name": "benchling",
                        "token_url": idp.url,
                        "client_id": "e2e-client",
                        "client_secret": secrets["v1"],
                        "http": {"allow_insecure_http": True},
                        "outputs": [{"path": "token", "format": "raw"}, {"path": "token.json", "format": "json"}],
                    }
                ],
            },
            tmp,
        )
        rollout("tv-token-vendor-example")
        say("helm install tv charts/token-vendor: deploy/tv-token-vendor-example rolled out")

    def s2():
        pod = pod_of("app.kubernetes.io/instance=tv,app.kubernetes.io/component=example")
        name = pod["metadata"]["name"]
        init = pod["spec"]["initContainers"]
        ensure(
            [(c["name"], c.get("restartPolicy")) for c in init] == [("token-vendor", "Always")],
            f"init containers {[(c['name'], c.get('restartPolicy')) for c in init]}",
        )
        say("kubectl get pod " + name + ": " + kubectl("get", "pod", name, "-n", NS, "-o",
            "jsonpath=initContainers={range .spec.initContainers[*]}{.name}(restartPolicy={.restartPolicy}){end} containers={range .spec.containers[*]}{.name}{end}"))
        st = statuses(pod)
        # The sidecar's first token came before the app container started (1 s resolution of Kubernetes times).
        ip = pod["status"]["podIP"]
        first = wait("the IdP's first token for the example pod", 30, lambda: idp.events(status=200, remote=ip))[0]
        app_started = ts(st["app"]["state"]["running"]["startedAt"])
        ensure(app_started >= int(first["issued_at"] / 1000), f"app started at {app_started}, before the first token ({first['issued_at'] / 1000})")
        logs = wait("the example app's first read", 30, lambda: kubectl("logs", name, "-n", NS, "-c", "app").splitlines())
        ensure(logs[0].endswith(f": {TOKEN_LEN} bytes"), f"the app's first read: {logs[0]!r}, not a whole {TOKEN_LEN}-byte token")
        say(f"example app's first read: {logs[0]}")

        # The e2e app (the chart's named templates in an app chart): its first read finds a token the IdP issued and
        # that had not expired then.
        app_dir = os.path.join(tmp, "app-chart")
        run("cp", "-r", os.path.join(E2E, "app-chart"), app_dir)
        os.makedirs(os.path.join(app_dir, "charts"))
        run("cp", "-r", CHART, os.path.join(app_dir, "charts"))
        tv_values = {
            "image": IMAGE,
            "tokens": [
                {
                    "name": "api",
                    "token_url": idp.url,
                    "client_id": "e2e-client",
                    "client_secret": secrets["v1"],
                    "http": {"allow_insecure_http": True},
                    "outputs": [{"path": "token", "format": "raw"}],
                }
            ],
        }
        helm_install("app", app_dir, {"token-vendor": tv_values}, tmp)
        rollout("app-app")
        pod = pod_of("app=e2e-app")
        ctx["app_pod"] = pod
        name = pod["metadata"]["name"]
        ensure([(c["name"], c.get("restartPolicy")) for c in pod["spec"]["initContainers"]] == [("token-vendor", "Always")], "app pod: no native sidecar")
        line = wait("the e2e app's first read", 30, lambda: kubectl("logs", name, "-n", NS, "-c", "app").splitlines())[0]
        parts = line.split()
        ensure(len(parts) == 7 and parts[1] == "read", f"the e2e app's first read: {line!r}")
        read_at, sha = int(parts[0]), parts[6]
        issued = [e for e in idp.events(status=200, remote=pod["status"]["podIP"]) if e.get("token_sha256") == sha]
        ensure(issued, f"the e2e app's first read ({line!r}) is not a token the IdP issued to the pod")
        e = issued[0]
        ensure(e["issued_at"] / 1000 - 1 <= read_at < e["expires_at"] / 1000,
               f"first read at {read_at}: token issued {e['issued_at'] / 1000}, expires {e['expires_at'] / 1000}")
        say(f"e2e app's first read at {read_at}: the token the IdP issued at {e['issued_at'] / 1000:.1f}, valid until {e['expires_at'] / 1000:.1f}")

        kubectl("wait", "job/tv-token-vendor-example-job", "-n", NS, "--for=condition=Complete", "--timeout=120s")
        def job_pod_done():
            pods = kjson("get", "pods", "-n", NS, "-l", "job-name=tv-token-vendor-example-job")["items"]
            ensure(len(pods) == 1, f"{len(pods)} pods of the Job")
            done = all("terminated" in c["state"] for c in statuses(pods[0]).values())
            return pods[0] if done else None

        jpod = wait("the Job pod's containers all terminated", 60, job_pod_done)
        jst = statuses(jpod)
        ensure(jst["app"]["state"]["terminated"]["exitCode"] == 0, f"Job app: {jst['app']['state']}")
        tvst = jst["token-vendor"]["state"]
        ensure("terminated" in tvst and tvst["terminated"]["exitCode"] == 0, f"Job sidecar: {tvst}")
        say("Job tv-token-vendor-example-job Complete: app exit 0, sidecar exit 0 (" + kubectl("logs", jpod["metadata"]["name"], "-n", NS, "-c", "app").strip() + ")")

        helm_install(
            "tvc",
            CHART,
            {
                "image": IMAGE,
                "sidecar": {"mode": "classic"},
                "example": {"enabled": True, "image": BUSYBOX},
                "tokens": tv_values["tokens"],
            },
            tmp,
        )
        rollout("tvc-token-vendor-example")
        cpod = pod_of("app.kubernetes.io/instance=tvc,app.kubernetes.io/component=example")
        cst = statuses(cpod)
        ensure([c["name"] for c in cpod["spec"]["initContainers"]] == ["token-vendor-init"], "classic: init container")
        ensure(cst["token-vendor-init"]["state"]["terminated"]["exitCode"] == 0, "classic: the init container's once did not exit 0")
        ensure("running" in cst["token-vendor"]["state"], "classic: the sidecar container is not running")
        clog = wait("the classic app's first read", 30, lambda: kubectl("logs", cpod["metadata"]["name"], "-n", NS, "-c", "app").splitlines())
        ensure(clog[0].endswith(f": {TOKEN_LEN} bytes"), f"classic app's first read: {clog[0]!r}")
        say(f"classic mode: init token-vendor-init exit 0, sidecar running, app's first read: {clog[0]}")

    def s3():
        pod = ctx["app_pod"]
        name = pod["metadata"]["name"]
        ident = kubectl("exec", name, "-n", NS, "-c", "app", "--", "id").strip()
        ensure(ident.startswith("uid=2000 gid=2000") and "65532" in ident, f"app id: {ident}")
        stat = kubectl("exec", name, "-n", NS, "-c", "app", "--", "stat", "-c", "%u %g %a", "/var/run/tokens/api/token").strip()
        ensure(stat == "65532 65532 640", f"token file owner/group/mode: {stat}")
        n = kubectl("exec", name, "-n", NS, "-c", "app", "--", "wc", "-c", "/var/run/tokens/api/token").split()[0]
        ensure(n == str(TOKEN_LEN), f"the app read {n} bytes")
        say(f"app: {ident}; token file uid gid mode: {stat}; the app reads {n} bytes through the group")

    def s4():
        pod = kjson("get", "pod", ctx["app_pod"]["metadata"]["name"], "-n", NS)
        ip = pod["status"]["podIP"]
        before = statuses(pod)["token-vendor"]
        secret = kjson("get", "secret", "app-token-vendor-credentials", "-n", NS)
        ensure("api.client_secret" in secret["data"], f"secret keys: {sorted(secret['data'])}")
        manifest = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "app-token-vendor-credentials", "namespace": NS, "labels": secret["metadata"].get("labels", {}),
                         "annotations": {k: v for k, v in secret["metadata"].get("annotations", {}).items() if k.startswith("meta.helm.sh/")}},
            "type": secret.get("type", "Opaque"),
            "stringData": {"api.client_id": "e2e-client", "api.client_secret": secrets["v2"]},
        }
        t_apply = time.time() * 1000
        kubectl("apply", "-f", "-", input=json.dumps(manifest))
        say("kubectl apply: Secret app-token-vendor-credentials with the new client secret")
        e = wait("a token request from the app pod with the new secret", 120,
                 lambda: idp.events(status=200, remote=ip, secret_version="v2"), every=1)[0]
        say(f"the IdP got the new secret {(e['at'] - t_apply) / 1000:.1f} s after the apply")
        later_old = [x for x in idp.events(remote=ip, secret_version="v1") if x["at"] > e["at"]]
        ensure(not later_old, f"the old secret was used after the new one: {later_old}")
        after = statuses(kjson("get", "pod", pod["metadata"]["name"], "-n", NS))["token-vendor"]
        ensure(after["containerID"] == before["containerID"] and after["restartCount"] == 0,
               f"sidecar container changed: {before['containerID']} -> {after['containerID']}, restarts {after['restartCount']}")
        say(f"same sidecar container ({after['containerID'][:25]}...), restartCount 0")

    def s5():
        disc = json.loads(kubectl("get", "--raw", "/.well-known/openid-configuration"))
        say(f"service-account issuer {disc['issuer']}, jwks_uri {disc['jwks_uri']}")
        helm_install(
            "wi",
            CHART,
            {
                "image": IMAGE,
                "example": {"enabled": True, "image": BUSYBOX},
                "serviceAccountToken": {"enabled": True, "audience": AUDIENCE, "expirationSeconds": 600},
                "tokens": [
                    {"name": "federated", "token_url": idp.url, "client_id": "e2e-federated", "auth_method": "client_assertion_file",
                     "http": {"allow_insecure_http": True}, "outputs": [{"path": "token", "format": "raw"}]},
                    {"name": "exchanged", "token_url": idp.url, "auth_method": "none", "grant": "token_exchange",
                     "http": {"allow_insecure_http": True}, "outputs": [{"path": "token", "format": "raw"}]},
                ],
            },
            tmp,
        )
        rollout("wi-token-vendor-example")
        pod = pod_of("app.kubernetes.io/instance=wi,app.kubernetes.io/component=example")
        ip = pod["status"]["podIP"]
        a = wait("a client-assertion grant", 30, lambda: idp.events(status=200, remote=ip, auth="k8s-assertion"))[0]
        x = wait("a token exchange", 30, lambda: idp.events(status=200, remote=ip, grant="token_exchange"))[0]
        for e in (a, x):
            ensure(e["sub"] == f"system:serviceaccount:{NS}:default" and AUDIENCE in e["aud"], f"claims: {e}")
        bad = idp.events(status=401, remote=ip)
        ensure(not bad, f"the IdP refused requests of the pod: {bad}")
        kids = {k for j in idp.events(event="jwks") for k in j["kids"]}
        ensure(a["kid"] in kids, f"kid {a['kid']} not from the JWKS")
        say(f"client assertion and token exchange with the projected token (sub {a['sub']}, aud {a['aud']}, kid {a['kid'][:12]}...), "
            f"verified by the IdP with the JWKS from {disc['jwks_uri']}")

    def s6():
        pod = kjson("get", "pod", ctx["app_pod"]["metadata"]["name"], "-n", NS)
        name = pod["metadata"]["name"]
        grace = pod["spec"]["terminationGracePeriodSeconds"]
        watch = subprocess.Popen(["kubectl", "get", "pod", name, "-n", NS, "-w", "-o", "json", "--output-watch-events"],
                                 stdout=subprocess.PIPE, text=True)
        # Read as it comes: a pod's objects fill the 64 KiB pipe within a few events, and a kubectl blocked on a full
        # pipe, then stopped, leaves its last object cut in half.
        chunks = []
        reader = threading.Thread(target=lambda: chunks.extend(iter(watch.stdout.readline, "")), daemon=True)
        reader.start()
        t0 = time.monotonic()
        kubectl("delete", "pod", name, "-n", NS, "--wait=true", f"--timeout={grace + 30}s")
        took = time.monotonic() - t0
        # The DELETED event carries the pod's last status; the watch goes on after it, so it is stopped then.
        wait("the watch's DELETED event", 30, lambda: '"DELETED"' in "".join(chunks))
        watch.terminate()
        watch.wait(timeout=10)
        reader.join(timeout=10)
        out = "".join(chunks)
        # The last status the kubelet reported before the pod object went away.
        dec = json.JSONDecoder()
        objs, i = [], 0
        while i < len(out):
            while i < len(out) and out[i].isspace():
                i += 1
            if i >= len(out):
                break
            o, i = dec.raw_decode(out, i)
            objs.append(o["object"] if "object" in o else o)
        final = statuses(objs[-1])
        tv = final["token-vendor"]["state"]
        ensure("terminated" in tv, f"the sidecar's last reported state: {tv}")
        ensure(tv["terminated"]["exitCode"] == 0 and tv["terminated"].get("reason") == "Completed", f"the sidecar ended with {tv['terminated']}")
        ensure(took < grace, f"the pod took {took:.1f} s to go, more than its grace period {grace} s")
        app = final["app"]["state"].get("terminated", {})
        say(f"kubectl delete pod: gone after {took:.1f} s (grace {grace} s); app exit {app.get('exitCode')}, sidecar exit 0 (Completed)")

    ok = False
    try:
        idp = IdP(tmp, secrets)
        say(f"test IdP at {idp.url}")
        step(1, "helm install from the README's values, namespace Pod Security restricted", s1)
        step(2, "native sidecar gates the app, a Job completes, classic mode", s2)
        step(3, "the app keeps its uid and reads the token through fsGroup", s3)
        step(4, "rotation: kubectl apply of a new client secret reaches the same sidecar", s4)
        step(5, "secretless: projected service-account token as client assertion and for token exchange", s5)
        step(6, "kubectl delete pod ends the sidecar cleanly within the grace period", s6)
        ok = True
    except Failed as e:
        print(f"FAILED: {e}", flush=True)
        diagnostics()
        if idp:
            print("---- IdP log", flush=True)
            print(open(idp.log.name).read()[-3000:], flush=True)
    finally:
        if idp:
            idp.stop()
    print("k8s e2e: step times (wall clock)")
    for n, title, dt in timings:
        print(f"  step {n}  {dt:6.1f} s  {title}")
    if not ok:
        print("k8s e2e: FAILED")
        sys.exit(1)
    print("k8s e2e: all 6 steps passed")


if __name__ == "__main__":
    main()
