#!/usr/bin/env python3
"""Checks on rendered Kubernetes manifests for scripts/validate-k8s.

Python stdlib + PyYAML + jsonschema (both in .tools/venv). Subcommands:

  split RENDERED CORE_OUT CRD_OUT   separate built-in kinds from CRD kinds (prometheus-operator)
  crds FILE                         validate CRD kinds against tests/k8s/crd-schemas/*.json
  pods RENDERED --mode M            structural assertions on every pod spec (see check_pod)
  netpol RENDERED --expect E        the NetworkPolicy: absent, or selects every sidecar pod and admits
                                    the admin port only from the given peers
  monitoring RENDERED               ServiceMonitor -> Service -> pods wiring, alert expressions
  configs RENDERED OUTDIR           extract each ConfigMap's config.yaml, paths rewritten into
                                    OUTDIR with dummy credential files; prints the config paths
  equiv CHART KUSTOMIZE             the kustomize rendering is the chart's (pod specs, config)
  readme CHART_DIR                  the README values table lists every key of values.yaml
  expect RENDERED K=V|K~RE ...      the single token of the rendered config has these keys (sa_audience:
                                    the projected token's audience; no_secret=1: no client secret
                                    anywhere; no_client_id=1: no client id; sa_audience_is_provider=1:
                                    the projected audience is the STS audience with https:)

Every failure is printed as "FAIL <what>: <why>"; the exit status is 1 if any.
"""
import argparse
import base64
import json
import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CHART_DIR = os.path.join(ROOT, "charts", "token-vendor")

CRD_GROUPS = ("monitoring.coreos.com/",)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod")
CREDENTIAL_ENV = re.compile(r"(?i)(secret|password|passwd|client_id|clientid|credential)")
CREDENTIAL_CONFIG_KEYS = ("client_id", "client_secret", "client_id_env", "client_secret_env")
CREDENTIAL_FILE_KEYS = ("client_id_file", "client_secret_file", "private_key_file", "certificate_file")
SECRET_METHODS = ("client_secret_basic", "client_secret_basic_raw", "client_secret_post")
DEFAULT_SA_TOKEN = "/var/run/secrets/token-vendor/token"
# http:// to a loopback host, as the binary's notify and plain-http rules take it; group 2: the port.
LOOPBACK_HTTP = re.compile(r"(?i)^http://(localhost|127\.[0-9]+\.[0-9]+\.[0-9]+|\[::1\])(:[0-9]*)?([/?#]|$)")

FAILURES = []


def fail(what, why):
    if (what, why) in FAILURES:
        return
    FAILURES.append((what, why))
    print(f"FAIL {what}: {why}")


def finish(ok_msg):
    if FAILURES:
        print(f"{len(FAILURES)} problem(s)")
        return 1
    print(ok_msg)
    return 0


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def is_crd_kind(doc):
    return any(str(doc.get("apiVersion", "")).startswith(g) for g in CRD_GROUPS)


def ident(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# --- split / crds -----------------------------------------------------------------------


def cmd_split(args):
    docs = load_docs(args.rendered)
    core = [d for d in docs if not is_crd_kind(d)]
    crds = [d for d in docs if is_crd_kind(d)]
    with open(args.core_out, "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    with open(args.crd_out, "w") as f:
        yaml.safe_dump_all(crds, f, sort_keys=False)
    print(f"{len(core)} built-in object(s): {', '.join(ident(d) for d in core) or '-'}")
    if crds:
        print(f"{len(crds)} CRD object(s) kubernetes-validate has no schema for, validated "
              f"separately against tests/k8s/crd-schemas: {', '.join(ident(d) for d in crds)}")
    return 0


def cmd_crds(args):
    import jsonschema

    schemas = {}
    sdir = os.path.join(HERE, "crd-schemas")
    for name in os.listdir(sdir):
        with open(os.path.join(sdir, name)) as f:
            s = json.load(f)
        schemas[(s["x-apiVersion"], s["x-kind"])] = s
    docs = load_docs(args.file)
    for d in docs:
        key = (d.get("apiVersion"), d.get("kind"))
        if key not in schemas:
            fail(ident(d), f"no schema in tests/k8s/crd-schemas for {key[0]} {key[1]}")
            continue
        v = jsonschema.Draft202012Validator(schemas[key])
        for e in sorted(v.iter_errors(d), key=lambda e: list(e.absolute_path)):
            path = "/".join(str(p) for p in e.absolute_path)
            fail(ident(d), f"at /{path}: {e.message}")
    return finish(f"{len(docs)} CRD object(s) valid")


# --- pod specs --------------------------------------------------------------------------


def workloads(docs):
    """Yields (doc, pod spec, pod labels) for every pod template in docs."""
    for d in docs:
        kind = d.get("kind")
        if kind not in WORKLOAD_KINDS:
            continue
        spec = d.get("spec") or {}
        if kind == "Pod":
            yield d, spec, (d.get("metadata") or {}).get("labels") or {}
            continue
        if kind == "CronJob":
            spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
        tmpl = spec.get("template") or {}
        yield d, tmpl.get("spec") or {}, (tmpl.get("metadata") or {}).get("labels") or {}


def is_tv(c):
    image = str(c.get("image", "")).split("@")[0]
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return repo.endswith("/token-vendor") or repo == "token-vendor"


def tv_role(c):
    args = (c.get("command") or [])[1:] + (c.get("args") or [])
    return args[0] if args else "run"


def config_arg(c):
    args = (c.get("command") or [])[1:] + (c.get("args") or [])
    for i, a in enumerate(args):
        if a == "--config" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    for e in c.get("env") or []:
        if e.get("name") == "TOKEN_VENDOR_CONFIG":
            return e.get("value")
    return None


def under(path, mount):
    mount = mount.rstrip("/") or "/"
    return path == mount or path.startswith(mount + "/")


def mount_for(c, path):
    """The (longest) volumeMount of container c that holds path."""
    best = None
    for m in c.get("volumeMounts") or []:
        if under(path, m["mountPath"]) and (best is None or len(m["mountPath"]) > len(best["mountPath"])):
            best = m
    return best


def emptydir_mount(c, path, volumes):
    """(mount, volume) of container c's emptyDir mount that holds path, or (None, None)."""
    m = mount_for(c, path)
    vol = volumes.get((m or {}).get("name"), {})
    return (m, vol) if m is not None and "emptyDir" in vol else (None, None)


def find_doc(docs, kind, name):
    for d in docs:
        if d.get("kind") == kind and (d.get("metadata") or {}).get("name") == name:
            return d
    return None


def listen_port(listen):
    m = re.fullmatch(r"(\[[0-9a-fA-F:.]*\]|[0-9.]+|[A-Za-z0-9.-]*):([0-9]{1,5})", str(listen))
    return int(m.group(2)) if m else None


def probe_port(c, probe):
    port = ((probe or {}).get("httpGet") or {}).get("port")
    if isinstance(port, str) and not port.isdigit():
        for p in c.get("ports") or []:
            if p.get("name") == port:
                return p.get("containerPort")
        return None
    return int(port) if port is not None else None


def secret_keys(docs, name):
    s = find_doc(docs, "Secret", name)
    if s is None:
        return None
    return set((s.get("stringData") or {}).keys()) | set((s.get("data") or {}).keys())


def secret_value(docs, name, key):
    s = find_doc(docs, "Secret", name)
    if s is None:
        return None
    if key in (s.get("stringData") or {}):
        return str(s["stringData"][key])
    if key in (s.get("data") or {}):
        return base64.b64decode(s["data"][key]).decode()
    return None


def pod_config(docs, pod, c, where):
    """(config dict, config volume mount) of token-vendor container c, or (None, None)."""
    path = config_arg(c)
    if not path:
        fail(where, f"container {c.get('name')} has no --config argument")
        return None, None
    m = mount_for(c, path)
    if m is None:
        fail(where, f"container {c.get('name')}: config {path} is on no volume mount")
        return None, None
    vol = next((v for v in pod.get("volumes") or [] if v.get("name") == m["name"]), None)
    cm_name = ((vol or {}).get("configMap") or {}).get("name")
    if not cm_name:
        fail(where, f"container {c.get('name')}: config volume {m['name']} is not a ConfigMap")
        return None, m
    cm = find_doc(docs, "ConfigMap", cm_name)
    if cm is None:
        fail(where, f"ConfigMap {cm_name} (config of {c.get('name')}) is not in the rendering")
        return None, m
    rel = os.path.relpath(path, m["mountPath"])
    if m.get("subPath"):
        rel = m["subPath"]
    items = (vol["configMap"].get("items")) or []
    key = next((i["key"] for i in items if i.get("path") == rel), rel)
    text = (cm.get("data") or {}).get(key)
    if text is None:
        fail(where, f"ConfigMap {cm_name} has no key {key}")
        return None, m
    return yaml.safe_load(text), m


def chart_defaults():
    with open(os.path.join(CHART_DIR, "values.yaml")) as f:
        return yaml.safe_load(f)


def check_env(c, where):
    for e in c.get("env") or []:
        vf = e.get("valueFrom") or {}
        if "secretKeyRef" in vf:
            fail(where, f"container {c['name']}: env {e['name']} comes from a Secret (credentials must be files)")
        elif CREDENTIAL_ENV.search(e.get("name", "")):
            fail(where, f"container {c['name']}: env {e['name']} looks like a credential")
    for ef in c.get("envFrom") or []:
        if "secretRef" in ef:
            fail(where, f"container {c['name']}: envFrom a Secret ({ef['secretRef'].get('name')})")


def eff(key, c, pod):
    sc = c.get("securityContext") or {}
    if key in sc:
        return sc[key]
    return (pod.get("securityContext") or {}).get(key)


def check_hardened(c, pod, where):
    """The sidecar's hardening is on its own container, not borrowed from the pod."""
    sc = c.get("securityContext") or {}
    name = c["name"]
    want = {
        "runAsNonRoot": (sc.get("runAsNonRoot"), True),
        "runAsUser": (sc.get("runAsUser"), 65532),
        "runAsGroup": (sc.get("runAsGroup"), 65532),
        "readOnlyRootFilesystem": (sc.get("readOnlyRootFilesystem"), True),
        "allowPrivilegeEscalation": (sc.get("allowPrivilegeEscalation"), False),
        "seccompProfile.type": ((sc.get("seccompProfile") or {}).get("type"), "RuntimeDefault"),
    }
    for k, (got, exp) in want.items():
        if got != exp:
            fail(where, f"container {name}: securityContext {k} is {got!r}, want {exp!r}")
    drop = ((sc.get("capabilities") or {}).get("drop")) or []
    if "ALL" not in drop:
        fail(where, f"container {name}: capabilities.drop {drop!r} does not contain ALL")
    if (sc.get("capabilities") or {}).get("add"):
        fail(where, f"container {name}: adds capabilities {sc['capabilities']['add']!r}")
    if sc.get("privileged"):
        fail(where, f"container {name}: privileged")


def check_probe(c, probe_name, path, port, where):
    probe = c.get(probe_name)
    if not probe:
        fail(where, f"container {c['name']}: no {probe_name}")
        return
    got_path = (probe.get("httpGet") or {}).get("path")
    if got_path != path:
        fail(where, f"container {c['name']}: {probe_name} path is {got_path!r}, want {path!r}")
    got_port = probe_port(c, probe)
    if got_port != port:
        fail(where, f"container {c['name']}: {probe_name} port is {got_port!r} but listen's port is {port}")
    for k in ("periodSeconds", "timeoutSeconds", "failureThreshold"):
        if not isinstance(probe.get(k), int) or probe[k] < 1:
            fail(where, f"container {c['name']}: {probe_name}.{k} is {probe.get(k)!r}")


def check_pod(docs, doc, pod, mode, defaults):
    """Structural assertions on one pod spec that carries token-vendor."""
    where = ident(doc)
    inits = pod.get("initContainers") or []
    mains = pod.get("containers") or []
    tv_init = [c for c in inits if is_tv(c)]
    tv_main = [c for c in mains if is_tv(c)]
    if not tv_init and not tv_main:
        fail(where, "no token-vendor container")
        return
    runs = [c for c in tv_init + tv_main if tv_role(c) == "run"]
    onces = [c for c in tv_init + tv_main if tv_role(c) == "once"]
    if len(runs) != 1:
        fail(where, f"want exactly one token-vendor 'run' container, found {len(runs)}")
        return
    sidecar = runs[0]

    # Mode-specific placement.
    if mode == "native":
        if sidecar not in tv_init:
            fail(where, "native mode: the token-vendor sidecar is not in initContainers")
        if sidecar.get("restartPolicy") != "Always":
            fail(where, f"native mode: sidecar restartPolicy is {sidecar.get('restartPolicy')!r}, want 'Always'")
        if onces:
            fail(where, "native mode: unexpected 'once' init container")
        if tv_main:
            fail(where, "native mode: a token-vendor container is in containers")
    else:
        if sidecar not in tv_main:
            fail(where, "classic mode: the token-vendor 'run' container is not in containers")
        if "restartPolicy" in sidecar:
            fail(where, "classic mode: the sidecar has a restartPolicy (that is native mode)")
        if len(onces) != 1 or onces[0] not in tv_init:
            fail(where, "classic mode: want one 'once' init container so the token exists before the app starts")
        elif "restartPolicy" in onces[0]:
            fail(where, "classic mode: the 'once' init container has a restartPolicy")
        if doc.get("kind") in ("Job", "CronJob"):
            fail(where, "classic mode in a Job: the sidecar keeps running and the Job never completes (use native)")

    cfg, cfg_mount = pod_config(docs, pod, sidecar, where)
    for c in onces:
        if config_arg(c) != config_arg(sidecar):
            fail(where, f"container {c['name']} reads config {config_arg(c)}, the sidecar {config_arg(sidecar)}")
    if cfg_mount is not None and cfg_mount.get("subPath"):
        fail(where, "the config is mounted with subPath: it would never update")
    port = listen_port((cfg or {}).get("listen", "[::]:8099"))

    # Probes and port.
    if mode == "native":
        check_probe(sidecar, "startupProbe", "/readyz", port, where)
    check_probe(sidecar, "readinessProbe", "/readyz", port, where)
    check_probe(sidecar, "livenessProbe", "/livez", port, where)
    cports = [p.get("containerPort") for p in sidecar.get("ports") or []]
    if port not in cports:
        fail(where, f"sidecar containerPorts {cports} do not include listen's port {port}")

    # Hardening and resources of every token-vendor container.
    want_res = defaults["sidecar"]["resources"]
    for c in tv_init + tv_main:
        check_hardened(c, pod, where)
        res = c.get("resources") or {}
        for sect in ("requests", "limits"):
            for k, v in (want_res.get(sect) or {}).items():
                got = (res.get(sect) or {}).get(k)
                if str(got) != str(v):
                    fail(where, f"container {c['name']}: resources.{sect}.{k} is {got!r}, want {v!r}")
    psc = pod.get("securityContext") or {}
    fsgroup = psc.get("fsGroup")
    if fsgroup is None and psc.get("supplementalGroups"):
        fsgroup = psc["supplementalGroups"][0]
    if fsgroup is None:
        fail(where, "pod securityContext has no fsGroup (or supplementalGroups): a non-root app cannot read the 0640 token files")
    # The pod asks only for file sharing: the app keeps its own UID/GID (and may be root).
    for k in ("runAsUser", "runAsGroup", "runAsNonRoot"):
        if k in psc:
            fail(where, f"pod securityContext sets {k}={psc[k]!r}: that forces it on the app containers too; "
                        "set it on the sidecar's container only")
    # Sidecar-only volumes: the projected service-account token and the state volume.
    sa_vols = {v["name"] for v in pod.get("volumes") or []
               if any("serviceAccountToken" in src for src in ((v.get("projected") or {}).get("sources") or []))}
    state_vols = {m["name"] for m in sidecar.get("volumeMounts") or []
                  if m.get("mountPath") == "/var/run/token-vendor/state"}
    for c in inits + mains:
        for m in c.get("volumeMounts") or []:
            if m["name"] in sa_vols | state_vols and not is_tv(c):
                fail(where, f"container {c['name']} mounts the sidecar-only volume {m['name']}")
            if m["name"] in sa_vols and is_tv(c):
                if m.get("mountPath") != "/var/run/secrets/token-vendor" or not m.get("readOnly"):
                    fail(where, f"container {c['name']}: projected token mounted at {m.get('mountPath')} "
                                f"readOnly={m.get('readOnly')!r}, want /var/run/secrets/token-vendor read-only")
            if m["name"] in sa_vols and m.get("subPath"):
                fail(where, f"container {c['name']}: projected token mounted with subPath (rotations would never arrive)")
    for v in pod.get("volumes") or []:
        if v["name"] in sa_vols:
            for src in v["projected"]["sources"]:
                sat = src.get("serviceAccountToken")
                if sat and (sat.get("path") != "token" or int(sat.get("expirationSeconds", 3600)) < 600):
                    fail(where, f"projected token {sat!r}: want path 'token' and expirationSeconds >= 600")

    # No credential in any env var, anywhere in the pod.
    for c in inits + mains:
        check_env(c, where)

    if cfg is None:
        return
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    tokens = cfg.get("tokens") or []
    cred_vols = set()
    token_mounts = set()
    for t in tokens:
        tname = t.get("name")
        for k in CREDENTIAL_CONFIG_KEYS:
            if k in t:
                fail(where, f"token {tname}: config has {k} (credentials must come from Secret files)")
        method = t.get("auth_method", "client_secret_basic")
        required = {"client_id_file"} if method != "none" else set()
        if method in SECRET_METHODS:
            required.add("client_secret_file")
        if method == "private_key_jwt":
            required.add("private_key_file")
        if method == "auto" and not any(t.get(k) for k in ("client_secret_file", "private_key_file", "client_assertion_file")):
            fail(where, f"token {tname}: auth_method auto with no credential (client secret, key or assertion file)")
        for k in CREDENTIAL_FILE_KEYS:
            p = t.get(k)
            if not p:
                if k in required:
                    fail(where, f"token {tname}: no {k} (auth_method {method})")
                continue
            m = mount_for(sidecar, p)
            vol = volumes.get((m or {}).get("name"), {})
            if m is None or "secret" not in vol:
                fail(where, f"token {tname}: {k} {p} is not on a Secret volume mount of the sidecar")
                continue
            if m.get("subPath"):
                fail(where, f"token {tname}: {k} is mounted with subPath (rotations would never arrive)")
            rel = os.path.relpath(p, m["mountPath"])
            items = vol["secret"].get("items")
            key = rel if not items else next((i["key"] for i in items if i.get("path") == rel), None)
            if key is None:
                fail(where, f"token {tname}: {k} {p}: no item of Secret volume {m['name']} has path {rel}")
                continue
            keys = secret_keys(docs, vol["secret"]["secretName"])
            if keys is not None and key not in keys:
                fail(where, f"token {tname}: Secret {vol['secret']['secretName']} has no key {key}")
            cred_vols.add(m["name"])
            if not m.get("readOnly"):
                fail(where, f"token {tname}: {k} is on a read-write mount ({m['name']})")
            mode = next((i.get("mode") for i in items or [] if i.get("path") == rel), None)
            mode = vol["secret"].get("defaultMode", 0o644) if mode is None else mode
            if mode & 0o002 or (k == "private_key_file" and "fsGroup" in psc and mode & 0o007):
                fail(where, f"token {tname}: {k} has mode {mode:o}: a private key is never readable by others")
        # The projected token (client assertion, subject token): the sidecar's read-only projected mount.
        for k in ("client_assertion_file", "subject_token_file"):
            p = t.get(k)
            if not p:
                continue
            m = mount_for(sidecar, p)
            if m is None or m["name"] not in volumes:
                fail(where, f"token {tname}: {k} {p} is on no volume mount of the sidecar")
            elif not m.get("readOnly"):
                fail(where, f"token {tname}: {k} {p} is on a read-write mount ({m['name']}): an assertion the sidecar could overwrite")
            elif p == DEFAULT_SA_TOKEN and m["name"] not in sa_vols:
                fail(where, f"token {tname}: {k} {p} is not on the projected service-account token volume")
            elif m["name"] in sa_vols and os.path.relpath(p, m["mountPath"]) != "token":
                fail(where, f"token {tname}: {k} {p} is not the projected token's file (token)")
        for k in ("ca_file", "client_cert_file", "client_key_file"):
            p = (t.get("http") or {}).get(k)
            if p and (mount_for(sidecar, p) is None or mount_for(sidecar, p)["name"] not in volumes):
                fail(where, f"token {tname}: http.{k} {p} is on no volume mount of the sidecar")
        for o in t.get("outputs") or []:
            p = o.get("path", "")
            m, vol = emptydir_mount(sidecar, p, volumes)
            if m is None:
                fail(where, f"token {tname}: output {p} is not on an emptyDir mount of the sidecar")
                continue
            token_mounts.add(m["name"])
            if m.get("readOnly"):
                fail(where, f"token {tname}: the sidecar mounts the token volume read-only")
            ed = vol["emptyDir"] or {}
            if ed.get("medium") != "Memory" or not ed.get("sizeLimit"):
                fail(where, f"token volume {m['name']}: emptyDir {ed!r}, want medium Memory and a sizeLimit")
            mode_s = str(o.get("mode", ""))
            if not re.fullmatch(r"0?[0-7]{3}", mode_s):
                fail(where, f"token {tname}: output {p} mode {mode_s!r} is not an octal mode")
            else:
                mode_i = int(mode_s, 8)
                if not mode_i & 0o040 or mode_i & 0o007:
                    fail(where, f"token {tname}: output {p} mode {mode_s}: want group-readable, not world-accessible")
            if fsgroup is not None and o.get("gid") != fsgroup:
                fail(where, f"token {tname}: output {p} gid {o.get('gid')!r} is not the pod's fsGroup {fsgroup}")

    # Credentials (client secret, private key, certificate) reach the sidecar only.
    for c in inits + mains:
        for m in c.get("volumeMounts") or []:
            if m["name"] in cred_vols and not is_tv(c):
                fail(where, f"container {c['name']} mounts the credentials volume {m['name']} (sidecar only)")

    # The app containers mount the token volume read-only.
    apps = [c for c in mains if not is_tv(c)]
    if not apps:
        fail(where, "no app container")
    for c in apps + [c for c in inits if not is_tv(c)]:
        for m in c.get("volumeMounts") or []:
            if m["name"] in token_mounts and not m.get("readOnly"):
                fail(where, f"container {c['name']} mounts the token volume {m['name']} read-write")
    if apps and not any(m["name"] in token_mounts for c in apps for m in c.get("volumeMounts") or []):
        fail(where, "no app container mounts the token volume")

    # notify: a POST stays on loopback and does not hit the sidecar's own admin port; a signal needs the shared
    # process namespace, a pid file the app writes and the sidecar only reads, and an app on the sidecar's uid.
    for t in tokens:
        tname, notify = t.get("name"), t.get("notify") or {}
        http = notify.get("http")
        if http is not None:
            m = LOOPBACK_HTTP.match(str(http.get("url", "")))
            if not m:
                fail(where, f"token {tname}: notify.http.url {http.get('url')!r} is not http:// to a loopback address")
            elif (m.group(2) or ":80")[1:] == str(port):
                fail(where, f"token {tname}: notify.http.url {http.get('url')!r} is token-vendor's own admin port")
        sig = notify.get("signal")
        if sig is None:
            continue
        if pod.get("shareProcessNamespace") is not True:
            fail(where, f"token {tname}: notify.signal without shareProcessNamespace: true (the sidecar cannot see the app's process)")
        pf = sig.get("pid_file", "")
        m, _ = emptydir_mount(sidecar, pf, volumes)
        if m is None:
            fail(where, f"token {tname}: pid file {pf} is not on an emptyDir mount of the sidecar")
            continue
        if not m.get("readOnly"):
            fail(where, f"token {tname}: the sidecar mounts the pid file's volume {m['name']} read-write (it only reads it)")
        if m["name"] in token_mounts | cred_vols | state_vols | sa_vols:
            fail(where, f"token {tname}: the pid file is on {m['name']}, a volume with tokens, credentials or state")
        writers = [c for c in apps if any(x["name"] == m["name"] and not x.get("readOnly")
                                          for x in c.get("volumeMounts") or [])]
        if not writers:
            fail(where, f"token {tname}: no app container mounts {m['name']} read-write to write its pid file {pf}")
        uid = eff("runAsUser", sidecar, pod)
        if writers and not any(eff("runAsUser", c, pod) == uid for c in writers):
            fail(where, f"token {tname}: no app container writing {pf} runs as the sidecar's uid {uid}: "
                        "the signal would be refused (a sidecar without capabilities signals only its own uid)")


def cmd_pods(args):
    docs = load_docs(args.rendered)
    defaults = chart_defaults()
    n = 0
    for doc, pod, _ in workloads(docs):
        # Nothing the sidecar does needs the Kubernetes API: no API token in any pod.
        if pod.get("automountServiceAccountToken") is not False:
            fail(ident(doc), f"automountServiceAccountToken is {pod.get('automountServiceAccountToken')!r}, want false")
        if not any(is_tv(c) for c in (pod.get("initContainers") or []) + (pod.get("containers") or [])):
            continue
        n += 1
        check_pod(docs, doc, pod, args.mode, defaults)
    if n < args.min_pods:
        fail(args.rendered, f"{n} pod spec(s) with token-vendor, want at least {args.min_pods}")
    # Nothing anywhere puts a credential into an env var (pods with the sidecar: done above).
    for doc, pod, _ in workloads(docs):
        for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            check_env(c, ident(doc))
    if args.want_sa_token:
        for doc, pod, _ in workloads(docs):
            if not any("serviceAccountToken" in src for v in pod.get("volumes") or []
                       for src in ((v.get("projected") or {}).get("sources") or [])):
                fail(ident(doc), "no projected serviceAccountToken volume, but --want-sa-token")
    return finish(f"{n} pod spec(s) pass the structural assertions ({args.mode} mode)")


# --- monitoring -------------------------------------------------------------------------

ALERT_EXPR = {
    "TokenVendorTokenInvalid": [r"token_vendor_token_valid\b", r"==\s*0"],
    "TokenVendorRefreshFailing": [r"token_vendor_refresh_total\b", r'result!="success"', r"\[15m\]",
                                  r'result="success"', r"\bunless\b"],
    "TokenVendorTokenExpiringSoon": [r"token_vendor_token_expiry_timestamp_seconds\b", r"time\(\)", r"<\s*\d+"],
}


def selector_matches(sel, labels):
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())


def cmd_monitoring(args):
    docs = load_docs(args.rendered)
    sms = [d for d in docs if d.get("kind") == "ServiceMonitor"]
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if not sms:
        fail(args.rendered, "no ServiceMonitor")
    if not rules:
        fail(args.rendered, "no PrometheusRule")
    services = [d for d in docs if d.get("kind") == "Service"]
    pods = [(doc, pod, labels) for doc, pod, labels in workloads(docs)]
    for sm in sms:
        sel = ((sm.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        svcs = [s for s in services if selector_matches(sel, (s.get("metadata") or {}).get("labels") or {})]
        if not svcs:
            fail(ident(sm), f"selector {sel} matches no Service in the rendering")
            continue
        for ep in sm["spec"].get("endpoints") or []:
            if ep.get("path", "/metrics") != "/metrics":
                fail(ident(sm), f"endpoint path {ep.get('path')!r}, want /metrics")
            for s in svcs:
                names = [p.get("name") for p in s["spec"].get("ports") or []]
                if ep.get("port") not in names:
                    fail(ident(sm), f"endpoint port {ep.get('port')!r} is not a port of {ident(s)} ({names})")
        for s in svcs:
            ssel = s["spec"].get("selector") or {}
            matched = [(d, p) for d, p, labels in pods if selector_matches(ssel, labels)]
            if not matched:
                fail(ident(s), f"selector {ssel} matches no pod template in the rendering")
            for d, p in matched:
                sidecar = next((c for c in (p.get("initContainers") or []) + (p.get("containers") or [])
                                if is_tv(c) and tv_role(c) == "run"), None)
                if sidecar is None:
                    fail(ident(s), f"selects {ident(d)}, which has no token-vendor sidecar")
                    continue
                cfg, _ = pod_config(docs, p, sidecar, ident(d))
                port = listen_port((cfg or {}).get("listen", ""))
                for sp in s["spec"].get("ports") or []:
                    tp = sp.get("targetPort", sp.get("port"))
                    if isinstance(tp, str):
                        tp = probe_port(sidecar, {"httpGet": {"port": tp}})
                    if tp != port:
                        fail(ident(s), f"port {sp.get('name')} targets {tp!r}, the sidecar listens on {port}")
    for pr in rules:
        found = {}
        for g in (pr.get("spec") or {}).get("groups") or []:
            for r in g.get("rules") or []:
                if "alert" in r:
                    found[r["alert"]] = r
        for alert, patterns in ALERT_EXPR.items():
            r = found.get(alert)
            if r is None:
                fail(ident(pr), f"no alert {alert}")
                continue
            for pat in patterns:
                if not re.search(pat, str(r.get("expr", ""))):
                    fail(ident(pr), f"alert {alert}: expr {r.get('expr')!r} does not match /{pat}/")
            if not (r.get("labels") or {}).get("severity"):
                fail(ident(pr), f"alert {alert}: no severity label")
    return finish(f"{len(sms)} ServiceMonitor(s) and {len(rules)} PrometheusRule(s) wired up")


# --- NetworkPolicy ----------------------------------------------------------------------


def covers(rule_port, proto, port):
    if (rule_port.get("protocol") or "TCP") != proto:
        return False
    p = rule_port.get("port")
    if p is None:
        return True
    if isinstance(p, str):
        return False  # named ports: not used by the chart
    return p <= port <= rule_port.get("endPort", p)


def cmd_netpol(args):
    docs = load_docs(args.rendered)
    pols = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    if args.expect == "absent":
        for p in pols:
            fail(ident(p), "a NetworkPolicy is rendered although networkPolicy.enabled is false")
        return finish("no NetworkPolicy (off by default)")
    if len(pols) != 1:
        fail(args.rendered, f"{len(pols)} NetworkPolicy object(s), want 1")
        return finish("")
    pol = pols[0]
    spec = pol.get("spec") or {}
    sel = (spec.get("podSelector") or {}).get("matchLabels") or {}
    if spec.get("policyTypes") != ["Ingress"]:
        fail(ident(pol), f"policyTypes {spec.get('policyTypes')!r}, want ['Ingress']")
    n = 0
    for doc, pod, labels in workloads(docs):
        sidecar = next((c for c in (pod.get("initContainers") or []) + (pod.get("containers") or [])
                        if is_tv(c) and tv_role(c) == "run"), None)
        if sidecar is None:
            continue
        n += 1
        if not selector_matches(sel, labels):
            fail(ident(pol), f"podSelector {sel} does not select {ident(doc)} (labels {labels})")
        cfg, _ = pod_config(docs, pod, sidecar, ident(doc))
        port = listen_port((cfg or {}).get("listen", "[::]:8099"))
        rules = spec.get("ingress") or []
        admin_rules = [r for r in rules if not r.get("ports") or any(covers(p, "TCP", port) for p in r["ports"])]
        for r in admin_rules:
            if not r.get("from"):
                fail(ident(pol), f"rule {r} admits the admin port {port} from everywhere")
        peers = [f for r in admin_rules for f in r.get("from") or []]
        want = [dict(x) for x in args.want_from_json] if args.want_from_json else []
        for w in want:
            if w not in peers:
                fail(ident(pol), f"the admin port does not admit {w}")
        for p in peers:
            if p not in want:
                fail(ident(pol), f"the admin port admits {p}, which the values do not ask for")
        if args.other_ports_open:
            for probe in (1, port - 1, port + 1, 65535, 443, 8080):
                if probe == port or not 1 <= probe <= 65535:
                    continue
                if not any(not r.get("from") and any(covers(p, "TCP", probe) for p in r.get("ports") or [])
                           for r in rules):
                    fail(ident(pol), f"TCP port {probe} of the app is not open to all (allowOtherPorts)")
            for proto in ("UDP", "SCTP"):
                if not any(not r.get("from") and any(covers(p, proto, 53) for p in r.get("ports") or [])
                           for r in rules):
                    fail(ident(pol), f"{proto} is not open to all (allowOtherPorts)")
    if n == 0:
        fail(args.rendered, "no pod template with the sidecar for the NetworkPolicy to select")
    return finish(f"NetworkPolicy {ident(pol)} admits the admin port only from the configured peers ({n} pod template(s))")


# --- configs ----------------------------------------------------------------------------


def rewrite_paths(obj, root):
    """Every absolute path string in obj, moved under root."""
    if isinstance(obj, dict):
        return {k: rewrite_paths(v, root) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rewrite_paths(v, root) for v in obj]
    if isinstance(obj, str) and obj.startswith("/"):
        return root.rstrip("/") + obj
    return obj


_PEM = {}
PEM_KINDS = {"ec256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
             "ec384": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
             "rsa": ["-newkey", "rsa:2048"]}


def test_pem(workdir, kind="ec256"):
    """A throwaway self-signed certificate and its PKCS#8 key (openssl), for *_file options that `check`
    parses; kind: ec256, ec384 or rsa."""
    if kind not in _PEM:
        import subprocess
        d = os.path.join(workdir, ".pem", kind)
        os.makedirs(d, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", *PEM_KINDS[kind],
                        "-nodes", "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem", "-days", "1",
                        "-subj", "/CN=token-vendor-test"], check=True, capture_output=True)
        _PEM[kind] = {"cert": open(f"{d}/cert.pem", "rb").read(), "key": open(f"{d}/key.pem", "rb").read()}
    return _PEM[kind]


def pem_kind(alg):
    """The test key type that `alg` signs with (no alg: an EC P-256 key, whose default is ES256)."""
    return {"RS256": "rsa", "PS256": "rsa", "ES384": "ec384"}.get(alg or "", "ec256")


def test_jwt():
    """A JWT-shaped assertion / subject token valid for an hour (check reads its exp, not its signature)."""
    import time

    def b64(o):
        return base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
    now = int(time.time())
    return f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64({'iss': 'https://k8s.test', 'sub': 'system:serviceaccount:ns:sa', 'aud': 'x', 'iat': now, 'exp': now + 3600})}.c2ln"


def write_token_files(t, out):
    """Throwaway contents for a rewritten token's key, certificate and assertion files (not the
    client id/secret: the callers write those)."""
    kind = pem_kind(t.get("alg"))
    files = {"private_key_file": test_pem(out, kind)["key"], "certificate_file": test_pem(out, kind)["cert"]}
    jwt = test_jwt().encode()
    files["client_assertion_file"] = jwt
    files["subject_token_file"] = jwt
    for k, content in files.items():
        p = t.get(k)
        if isinstance(p, str) and p.startswith(out):
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(content)


def cmd_configs(args):
    docs = load_docs(args.rendered)
    out = os.path.abspath(args.outdir)
    n = 0
    for d in docs:
        if d.get("kind") != "ConfigMap" or "config.yaml" not in (d.get("data") or {}):
            continue
        n += 1
        name = d["metadata"]["name"]
        root = os.path.join(out, name)
        cfg = yaml.safe_load(d["data"]["config.yaml"])
        cfg = rewrite_paths(cfg, root)
        for t in cfg.get("tokens") or []:
            for k in ("client_id_file", "client_secret_file"):
                if k in t:
                    os.makedirs(os.path.dirname(t[k]), exist_ok=True)
                    with open(t[k], "w") as f:
                        f.write(f"dummy-{k}")
            http = t.get("http") or {}
            for k, pem in (("ca_file", "cert"), ("client_cert_file", "cert"), ("client_key_file", "key")):
                if k in http:
                    os.makedirs(os.path.dirname(http[k]), exist_ok=True)
                    with open(http[k], "wb") as f:
                        f.write(test_pem(out)[pem])
            write_token_files(t, out)
        # In a pod only the token volume's root exists (an emptyDir); the per-token
        # directories below it are token-vendor's to create.
        os.makedirs(root + args.token_root, exist_ok=True)
        path = os.path.join(root, "config.yaml")
        os.makedirs(root, exist_ok=True)
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        print(path)
    if n == 0:
        print(f"FAIL {args.rendered}: no ConfigMap with a config.yaml", file=sys.stderr)
        return 1
    return 0


# --- equivalence of deploy/ with the chart ----------------------------------------------


def cmd_equiv(args):
    chart = load_docs(args.chart)
    kust = load_docs(args.kustomize)
    for kind in ("Deployment", "ConfigMap", "Secret"):
        c_docs = [d for d in chart if d.get("kind") == kind]
        k_docs = [d for d in kust if d.get("kind") == kind]
        if len(c_docs) != 1 or len(k_docs) != 1:
            fail(kind, f"want one in each rendering, chart has {len(c_docs)}, kustomize {len(k_docs)}")
            continue
        c, k = c_docs[0], k_docs[0]
        if c["metadata"]["name"] != k["metadata"]["name"]:
            fail(kind, f"name {k['metadata']['name']!r} differs from the chart's {c['metadata']['name']!r}")
        if kind == "Deployment":
            a, b = c["spec"]["template"]["spec"], k["spec"]["template"]["spec"]
            what = "spec.template.spec"
        elif kind == "ConfigMap":
            a = yaml.safe_load(c["data"]["config.yaml"])
            b = yaml.safe_load(k["data"]["config.yaml"])
            what = "config.yaml"
        else:
            a = sorted((c.get("stringData") or {}).keys())
            b = sorted((k.get("stringData") or {}).keys())
            what = "keys"
        if a != b:
            diff = first_diff(a, b, what)
            fail(f"{kind} {what}", f"deploy/ differs from the chart: {diff}")
    return finish("deploy/ is equivalent to the chart's rendering")


def first_diff(a, b, path):
    if type(a) is not type(b):
        return f"{path}: chart {a!r} vs deploy {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a:
                return f"{path}.{k}: only in deploy/ ({b[k]!r})"
            if k not in b:
                return f"{path}.{k}: only in the chart ({a[k]!r})"
            if a[k] != b[k]:
                return first_diff(a[k], b[k], f"{path}.{k}")
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} item(s) in the chart vs {len(b)} in deploy/"
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_diff(x, y, f"{path}[{i}]")
    return f"{path}: chart {a!r} vs deploy {b!r}"


# --- README values table ----------------------------------------------------------------


def leaf_keys(obj, prefix=""):
    """Documented keys: leaves, plus maps/lists as a whole where they are free-form."""
    keys = []
    for k, v in obj.items():
        p = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v and p not in ("sidecar.resources", "sidecar.securityContext",
                                                   "podSecurityContext"):
            keys += leaf_keys(v, p)
        else:
            keys.append(p)
    return keys


def cmd_readme(args):
    values = chart_defaults()
    with open(os.path.join(args.chart_dir, "README.md")) as f:
        readme = f.read()
    values_section = readme.split("\n## Values\n", 1)[-1] if "\n## Values\n" in readme else ""
    if not values_section:
        fail("README.md", "no '## Values' section")
    table_keys = set(re.findall(r"^\|\s*`([^`]+)`\s*\|", values_section, re.M))
    missing = [k for k in leaf_keys(values) if k not in table_keys]
    for k in missing:
        fail("README.md values table", f"values.yaml key {k} is not in the table")
    unknown = [k for k in table_keys if not any(k == x or k.startswith(x + ".") or x.startswith(k + ".")
                                                 for x in leaf_keys(values))]
    for k in unknown:
        fail("README.md values table", f"the table lists {k}, which values.yaml does not have")
    for name in ("token-vendor.sidecar", "token-vendor.volumes", "token-vendor.appVolumeMounts",
                 "token-vendor.config"):
        if f'include "{name}"' not in readme:
            fail("README.md", f"does not show the include of {name}")
    return finish(f"README values table covers all {len(leaf_keys(values))} keys")


def cmd_expect(args):
    docs = load_docs(args.rendered)
    cm = next((d for d in docs if d.get("kind") == "ConfigMap" and "config.yaml" in (d.get("data") or {})), None)
    if cm is None:
        fail(args.rendered, "no ConfigMap with a config.yaml")
        return finish("")
    tokens = yaml.safe_load(cm["data"]["config.yaml"]).get("tokens") or []
    if len(tokens) != 1:
        fail(args.rendered, f"{len(tokens)} tokens, want 1")
        return finish("")
    t = dict(tokens[0])
    sa = [src["serviceAccountToken"] for d in docs for _, pod, _ in workloads([d])
          for v in pod.get("volumes") or [] for src in (v.get("projected") or {}).get("sources") or []
          if "serviceAccountToken" in src]
    t["sa_audience"] = sa[0].get("audience") if sa else None
    for e in args.expect:
        m = re.fullmatch(r"([a-z_]+)(=|~)(.*)", e)
        key, op, want = m.groups()
        if key == "no_secret":
            found = [k for k in t if "secret" in k] + [d["metadata"]["name"] for d in docs
                                                       if d.get("kind") == "Secret" and any(
                                                           "secret" in k for k in (d.get("stringData") or {}))]
            if found:
                fail(args.rendered, f"a client secret is configured or rendered: {found}")
        elif key == "absent":
            there = [k for k in want.split(",") if k in t]
            if there:
                fail(args.rendered, f"the token has {there}, which it must not")
        elif key == "no_client_id":
            if any(k.startswith("client_id") for k in t):
                fail(args.rendered, "the token has a client id")
        elif key == "sa_audience_is_provider":
            if t["sa_audience"] != "https:" + str(t.get("audience")):
                fail(args.rendered, f"projected token audience {t['sa_audience']!r} is not https: + the STS "
                                    f"audience {t.get('audience')!r} (the provider's default allowed audience)")
        elif op == "=" and str(t.get(key)) != want:
            fail(args.rendered, f"{key} is {t.get(key)!r}, want {want!r}")
        elif op == "~" and not re.search(want, str(t.get(key) or "")):
            fail(args.rendered, f"{key} {t.get(key)!r} does not match /{want}/")
    return finish(f"the rendered token has {', '.join(args.expect)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("split")
    p.add_argument("rendered")
    p.add_argument("core_out")
    p.add_argument("crd_out")
    p.set_defaults(fn=cmd_split)
    p = sub.add_parser("crds")
    p.add_argument("file")
    p.set_defaults(fn=cmd_crds)
    p = sub.add_parser("pods")
    p.add_argument("rendered")
    p.add_argument("--mode", choices=("native", "classic"), required=True)
    p.add_argument("--min-pods", type=int, default=1)
    p.add_argument("--want-sa-token", action="store_true")
    p.set_defaults(fn=cmd_pods)
    p = sub.add_parser("netpol")
    p.add_argument("rendered")
    p.add_argument("--expect", choices=("present", "absent"), required=True)
    p.add_argument("--want-from-json", type=json.loads, default=None,
                   help="JSON list of the NetworkPolicyPeer objects the admin port must admit, exactly")
    p.add_argument("--other-ports-open", action="store_true")
    p.set_defaults(fn=cmd_netpol)
    p = sub.add_parser("monitoring")
    p.add_argument("rendered")
    p.set_defaults(fn=cmd_monitoring)
    p = sub.add_parser("configs")
    p.add_argument("rendered")
    p.add_argument("outdir")
    p.add_argument("--token-root", default="/var/run/tokens")
    p.set_defaults(fn=cmd_configs)
    p = sub.add_parser("equiv")
    p.add_argument("chart")
    p.add_argument("kustomize")
    p.set_defaults(fn=cmd_equiv)
    p = sub.add_parser("expect")
    p.add_argument("rendered")
    p.add_argument("expect", nargs="+")
    p.set_defaults(fn=cmd_expect)
    p = sub.add_parser("readme")
    p.add_argument("chart_dir")
    p.set_defaults(fn=cmd_readme)
    args = ap.parse_args()
    sys.exit(args.fn(args))


if __name__ == "__main__":
    main()
