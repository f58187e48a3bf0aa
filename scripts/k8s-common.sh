# shellcheck shell=bash
# Shared by scripts/k8s-up and scripts/k8s-down (sourced, with ROOT set): where the test cluster lives, its ports
# and addresses, and how its processes are started, waited for and stopped (by the pids in .k8s/run/).

K8S="$ROOT/.k8s"
CLUSTER_SRC="$ROOT/tests/k8s/cluster"
K8S_VERSION=v1.34.4
K8S_VERSION_MAJOR=1
K8S_VERSION_MINOR=34
PAUSE_VERSION=3.10.1
PAUSE_C="$(go env GOMODCACHE 2>/dev/null)/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c"
NODE_NAME=e2e-node
BRIDGE=tve2e0
POD_SUBNET=10.244.77.0/24
NODE_IP=10.244.77.1
ETCD_PORT=12379
ETCD_PEER_PORT=12380
APISERVER_PORT=16443
APISERVER="https://127.0.0.1:$APISERVER_PORT"
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
CONTAINERD_SOCK="$K8S/run/containerd.sock"
RUNC="$K8S/bin/runc"
CNI_BIN=/usr/lib/cni
BUSYBOX=/bin/busybox
KUBECTL="$ROOT/.tools/bin/kubectl"
# The daemons, in the order k8s-up starts them (k8s-down stops them in reverse).
DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet)

log() { printf 'k8s: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# running NAME: whether the process in .k8s/run/NAME.pid is alive and is NAME.
running() {
  local pid
  pid="$(cat "$K8S/run/$1.pid" 2>/dev/null)" || return 1
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" == *"$K8S/bin/$1 "* ]]
}

# start NAME BINARY ARGS...: starts .k8s/bin/BINARY in its own session, output to .k8s/log/NAME.log, unless
# it runs already.
start() {
  local name="$1" bin="$2"
  shift 2
  if running "$name"; then
    log "$name is running (pid $(cat "$K8S/run/$name.pid"))"
    return 0
  fi
  setsid "$K8S/bin/$bin" "$@" </dev/null >"$K8S/log/$name.log" 2>&1 &
  echo $! >"$K8S/run/$name.pid"
  log "started $name (pid $!, log .k8s/log/$name.log)"
}

# wait_for WHAT SECONDS CMD...: runs CMD every second until it succeeds; fails with the daemons' log tails.
wait_for() {
  local what="$1" limit="$2" t0=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - t0 > limit)); then
      local d
      for d in "${DAEMONS[@]}"; do
        [[ -f "$K8S/log/$d.log" ]] || continue
        log "---- last lines of .k8s/log/$d.log"
        tail -n 15 "$K8S/log/$d.log" >&2
      done
      die "$what: not reached after $limit s"
    fi
    sleep 1
  done
  log "$what after $((SECONDS - t0)) s"
}

# stop NAME: SIGTERM, up to 20 s, then SIGKILL, for the pid in .k8s/run/NAME.pid.
stop() {
  local name="$1" pid i
  if running "$name"; then
    pid="$(cat "$K8S/run/$name.pid")"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
      [[ -d "/proc/$pid" ]] || break
      sleep 0.1
    done
    if [[ -d "/proc/$pid" ]]; then
      log "$name (pid $pid) did not stop in 20 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name"
  fi
  rm -f "$K8S/run/$name.pid"
}
