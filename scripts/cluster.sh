#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, as plain processes:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy (built from tools/k8s/ by scripts/build-control-plane.sh),
# CoreDNS (same script), containerd, runc and the CNI plugins (Debian
# packages). No registry: the sandbox ("pause") image is built here from
# images/pause/pause.c and the project's images (.cache/images/*.oci.tar,
# scripts/build-images.sh) are imported into containerd.
#
#   scripts/cluster.sh up       start it (idempotent: when it runs, only
#                               reimports the images)
#   scripts/cluster.sh down     stop every process and pod, undo the network
#                               changes; the state folder is kept (--purge
#                               removes it too)
#   scripts/cluster.sh status   what runs, and the nodes
#   scripts/cluster.sh import   (re)import .cache/images/*.oci.tar
#   scripts/cluster.sh tools    install what it needs (Debian packages) and
#                               build the Kubernetes binaries if missing
#   scripts/cluster.sh user NAME [GROUP…]
#                               a kubeconfig for a person (client certificate
#                               from the cluster CA); prints its path
#   scripts/cluster.sh webhook-client-ca
#                               the CA of the client certificate kube-apiserver
#                               presents to admission webhooks (its DNS name:
#                               kube-apiserver-webhook-client); for the chart's
#                               webhook.clientAuth
#
# Then: export KUBECONFIG=$(scripts/cluster.sh kubeconfig)
#
# The node's address is OPENMODEL_CLUSTER_IP (default 10.200.0.1), added to
# the loopback device: the API server, CoreDNS and anything the pods should
# reach on the host (a model server in the demo) listen there, and pods reach
# it through their bridge's gateway. Pods get 10.244.0.0/24 on the bridge
# openmodel0; Services 10.96.0.0/16 (kube-proxy, iptables mode); DNS
# cluster.local.
#
# Why these kubelet settings (KubeletConfiguration in the state folder):
#   failCgroupV1: false  this machine has cgroup v1 only (no unified
#                        hierarchy with controllers); Kubernetes 1.35+ refuses
#                        v1 unless told to accept it.
#   cgroupDriver: cgroupfs  no systemd runs here.
#   failSwapOn: false    harmless without swap, needed on machines with it.
#   evictionHard at 1 %  a shared build machine's disk is often fuller than
#                        the default 10 %/15 % thresholds; the pods here are
#                        small.
#
# Needs root (network namespaces, cgroups, iptables, mounts). Environment:
#   OPENMODEL_CLUSTER_DIR  state folder (default .cache/cluster, git-ignored)
#   OPENMODEL_CLUSTER_IP   the node's address (default 10.200.0.1)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=$(realpath -m "${OPENMODEL_CLUSTER_DIR:-$root/.cache/cluster}")
ip=${OPENMODEL_CLUSTER_IP:-10.200.0.1}
bin="$root/.cache/k8s/bin"
node=openmodel-node
pod_cidr=10.244.0.0/24
cluster_cidr=10.244.0.0/16
service_cidr=10.96.0.0/16
kubernetes_service_ip=10.96.0.1
bridge=openmodel0
# Sockets and containerd's state live under /run: unix socket paths are
# limited to 108 bytes and containerd's state must not outlive a reboot.
run_dir=/run/openmodel-cluster
# The kubelet's root folder holds unix sockets (pod-resources/<10 digits>,
# plugins), and a socket's path may not exceed 107 bytes: under a long state
# folder (the tests' is in the per-user cache) it moves to a short folder of
# its own, named after the state folder.
kubelet_root="$dir/kubelet/root"
if [ $((${#kubelet_root} + 32)) -gt 107 ]; then
  kubelet_root="/var/tmp/openmodel-kubelet-$(printf '%s' "$dir" | sha256sum | cut -c1-12)"
fi
containerd_sock="$run_dir/containerd.sock"
etcd_port=23791
etcd_peer_port=23801
apiserver_port=6443
pause_image=openmodel.local/pause:1
kubeconfig="$dir/admin.kubeconfig"
webhook_client_name=kube-apiserver-webhook-client
# Start order; `down` stops in reverse.
components=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns)

say() { echo "cluster: $*"; }
die() {
  echo "cluster: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

pid_of() { cat "$dir/pids/$1.pid" 2>/dev/null || true; }
running() {
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# start <name> <command…>: runs it in its own session, logs to logs/<name>.log.
start() {
  local name=$1
  shift
  if running "$name"; then
    return
  fi
  mkdir -p "$dir/logs" "$dir/pids"
  setsid "$@" >>"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/$name.pid"
  say "started $name (pid $!, log ${dir#"$root"/}/logs/$name.log)"
}

# wait_for <what> <seconds> <command…>: polls until the command succeeds.
wait_for() {
  local what=$1 limit=$2 waited=0
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$waited" -ge "$limit" ]; then
      die "$what not ready after ${limit} s; see the logs in ${dir#"$root"/}/logs/"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  say "$what ready (${waited} s)"
}

kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

check_prerequisites() {
  [ "$(id -u)" = 0 ] || die "needs root (network, cgroups, iptables, mounts); run it with sudo"
  local missing=() pkg
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
  command -v buildah >/dev/null 2>&1 || missing+=(buildah)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]}; install them and rerun"
    say "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  for pkg in etcd "${components[@]:1:3}" kubelet kube-proxy coredns kubectl; do
    if [ ! -x "$bin/$pkg" ]; then
      say "Kubernetes binaries missing; building them (scripts/build-control-plane.sh, ~20 min the first time)"
      scripts/build-control-plane.sh
      break
    fi
  done
}

# --- certificates -----------------------------------------------------------

# cert <name> <CN> <O or ""> <SANs or ""> [server]: a key and a certificate
# signed by the cluster CA, kept across restarts.
cert() {
  local name=$1 cn=$2 org=$3 sans=$4 usage=${5:-client} subj ext
  [ -f "$dir/pki/$name.crt" ] && return
  subj="/CN=$cn"
  [ -n "$org" ] && subj="/O=$org$subj"
  ext="$dir/pki/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ "$usage" = server ]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } >"$ext"
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/pki/$name.key" 2>/dev/null
  openssl req -new -key "$dir/pki/$name.key" -subj "$subj" -out "$dir/pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$dir/pki/$name.csr" -CA "$dir/pki/ca.crt" -CAkey "$dir/pki/ca.key" \
    -CAcreateserial -days 365 -extfile "$ext" -out "$dir/pki/$name.crt" 2>/dev/null
  rm -f "$dir/pki/$name.csr" "$ext"
}

make_pki() {
  mkdir -p "$dir/pki"
  chmod 700 "$dir/pki"
  if [ ! -f "$dir/pki/ca.crt" ]; then
    say "creating the cluster CA and certificates in ${dir#"$root"/}/pki"
    openssl ecparam -name prime256v1 -genkey -noout -out "$dir/pki/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$dir/pki/ca.key" -subj "/CN=openmodel-cluster-ca" -days 3650 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$dir/pki/ca.crt" 2>/dev/null
  fi
  [ -f "$dir/pki/service-account.key" ] || {
    openssl ecparam -name prime256v1 -genkey -noout -out "$dir/pki/service-account.key" 2>/dev/null
    openssl ec -in "$dir/pki/service-account.key" -pubout -out "$dir/pki/service-account.pub" 2>/dev/null
  }
  cert kube-apiserver kube-apiserver "" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$ip,IP:$kubernetes_service_ip" server
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
  cert admin openmodel-admin system:masters ""
  cert kube-controller-manager system:kube-controller-manager "" ""
  cert kube-scheduler system:kube-scheduler "" ""
  cert kube-proxy system:kube-proxy "" ""
  cert coredns openmodel-coredns "" ""
  cert kubelet "system:node:$node" system:nodes "" 
  cert kubelet-serving "system:node:$node" system:nodes "DNS:$node,DNS:localhost,IP:$ip,IP:127.0.0.1" server
  # What kube-apiserver presents to admission webhooks (admission_config):
  # the cluster CA signs other clients too, so webhooks also check its name.
  cert webhook-client "$webhook_client_name" "" "DNS:$webhook_client_name"
}

# admission_config: kube-apiserver's --admission-control-config-file, which
# makes it present the webhook-client certificate to every webhook, so that
# OpenModel's webhook can refuse everyone else (docs/install.md).
admission_config() {
  cat >"$dir/admission-webhooks.kubeconfig" <<EOF2
apiVersion: v1
kind: Config
users:
  - name: '*'
    user:
      client-certificate: $dir/pki/webhook-client.crt
      client-key: $dir/pki/webhook-client.key
EOF2
  cat >"$dir/admission.yaml" <<EOF2
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: ValidatingAdmissionWebhook
    configuration:
      apiVersion: apiserver.config.k8s.io/v1
      kind: WebhookAdmissionConfiguration
      kubeConfigFile: $dir/admission-webhooks.kubeconfig
  - name: MutatingAdmissionWebhook
    configuration:
      apiVersion: apiserver.config.k8s.io/v1
      kind: WebhookAdmissionConfiguration
      kubeConfigFile: $dir/admission-webhooks.kubeconfig
EOF2
  chmod 600 "$dir/admission-webhooks.kubeconfig" "$dir/admission.yaml"
}

# make_kubeconfig <client cert name> [file]: a kubeconfig for it, at
# <name>.kubeconfig in the state folder by default.
make_kubeconfig() {
  local name=$1 file=${2:-"$dir/$1.kubeconfig"}
  [ -f "$file" ] && return
  "$bin/kubectl" config set-cluster openmodel --kubeconfig "$file" \
    --server "https://$ip:$apiserver_port" --certificate-authority "$dir/pki/ca.crt" --embed-certs >/dev/null
  "$bin/kubectl" config set-credentials "$name" --kubeconfig "$file" \
    --client-certificate "$dir/pki/$name.crt" --client-key "$dir/pki/$name.key" --embed-certs >/dev/null
  "$bin/kubectl" config set-context openmodel --kubeconfig "$file" --cluster openmodel --user "$name" >/dev/null
  "$bin/kubectl" config use-context openmodel --kubeconfig "$file" >/dev/null
  chmod 600 "$file"
}

# --- host network -------------------------------------------------------------

setup_network() {
  local addresses
  addresses=$(ip -4 addr show dev lo)
  [[ $addresses == *" $ip/"* ]] || ip addr add "$ip/32" dev lo
  # Pods' packets are forwarded between the bridge and the host, and bridged
  # packets go through iptables so that Service addresses work pod to pod.
  sysctl -qw net.ipv4.ip_forward=1
  if [ -f /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
    sysctl -qw net.bridge.bridge-nf-call-iptables=1
  else
    say "warning: no br_netfilter (/proc/sys/net/bridge); a pod may not reach a Service served by a pod on the same bridge"
  fi
  mkdir -p "$dir/cni"
  cat >"$dir/cni/10-openmodel.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "openmodel",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$pod_cidr"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$dir/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
}

# --- images -------------------------------------------------------------------

# The sandbox image, from images/pause/pause.c: static binary, from scratch.
build_pause_image() {
  local out="$root/.cache/images/pause.oci.tar" work ctr
  [ -f "$out" ] && [ "$out" -nt images/pause/pause.c ] && return
  say "building the sandbox image $pause_image from images/pause/pause.c"
  work=$(mktemp -d)
  gcc -static -Os -Wall -Wextra -o "$work/pause" images/pause/pause.c
  strip "$work/pause"
  local buildah=(buildah --root "$root/.cache/images/buildah/storage" --runroot "$root/.cache/images/buildah/run" --storage-driver vfs)
  ctr=$("${buildah[@]}" from --quiet scratch)
  "${buildah[@]}" copy --quiet "$ctr" "$work/pause" /pause >/dev/null
  "${buildah[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  mkdir -p "$root/.cache/images"
  "${buildah[@]}" commit --quiet --format oci --timestamp 0 --rm "$ctr" "oci-archive:$out.tmp:$pause_image" >/dev/null
  "${buildah[@]}" rmi --all --force >/dev/null 2>&1 || true
  mv -f "$out.tmp" "$out"
  rm -rf "$work"
}

ctr() { command ctr --address "$containerd_sock" --namespace k8s.io "$@"; }

# Imports every .cache/images/*.oci.tar under the name it carries
# (docker.io/openmodel/<binary>:<version>, the chart's default repositories;
# openmodel.local/pause:1 for the sandbox).
import_images() {
  local tar
  build_pause_image
  for tar in "$root"/.cache/images/*.oci.tar; do
    [ -f "$tar" ] || continue
    ctr images import --all-platforms "$tar" >/dev/null
    say "imported $(tar -xOf "$tar" index.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])')"
  done
}

# --- components -----------------------------------------------------------------

start_etcd() {
  start etcd "$bin/etcd" --name "$node" --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "$node=http://127.0.0.1:$etcd_peer_port" --listen-metrics-urls "" --log-level warn
  wait_for etcd 60 curl -fsS "http://127.0.0.1:$etcd_port/health"
}

start_apiserver() {
  admission_config
  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$ip" --advertise-address "$ip" --secure-port "$apiserver_port" \
    --tls-cert-file "$dir/pki/kube-apiserver.crt" --tls-private-key-file "$dir/pki/kube-apiserver.key" \
    --client-ca-file "$dir/pki/ca.crt" \
    --kubelet-client-certificate "$dir/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$dir/pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$dir/pki/ca.crt" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$dir/pki/service-account.pub" \
    --service-account-signing-key-file "$dir/pki/service-account.key" \
    --service-cluster-ip-range "$service_cidr" \
    --enable-aggregator-routing=true \
    --kubelet-preferred-address-types InternalIP \
    --allow-privileged=true \
    --admission-control-config-file "$dir/admission.yaml" \
    --profiling=false
  wait_for kube-apiserver 120 kubectl get --raw /readyz
}

# Storage for claims (the ledger's): a default StorageClass without a
# provisioner and a few hostPath volumes under the state folder, which the
# claims bind to. Owned by 65532, the user every OpenModel image runs as
# (hostPath volumes get no fsGroup ownership change).
make_storage() {
  local i volumes=""
  for i in 1 2 3 4; do
    mkdir -p "$dir/volumes/pv$i"
    chown 65532:65532 "$dir/volumes/pv$i"
    volumes+="---
apiVersion: v1
kind: PersistentVolume
metadata: {name: openmodel-local-pv$i}
spec:
  capacity: {storage: 20Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: openmodel-local
  hostPath: {path: $dir/volumes/pv$i, type: Directory}
"
  done
  kubectl apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: openmodel-local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
reclaimPolicy: Retain
$volumes
EOF
}

start_controllers() {
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$dir/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$dir/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$dir/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 \
    --service-account-private-key-file "$dir/pki/service-account.key" \
    --root-ca-file "$dir/pki/ca.crt" \
    --cluster-signing-cert-file "$dir/pki/ca.crt" --cluster-signing-key-file "$dir/pki/ca.key" \
    --use-service-account-credentials=true \
    --service-cluster-ip-range "$service_cidr" \
    --leader-elect=false --profiling=false
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$dir/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "$dir/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$dir/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false
}

start_containerd() {
  mkdir -p "$dir/containerd" "$run_dir"
  cat >"$dir/containerd/config.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$run_dir/containerd-state"
[grpc]
  address = "$containerd_sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  # This machine's processes may not lower their OOM score (no
  # CAP_SYS_RESOURCE in the sandbox the machine runs in), and the kubelet asks
  # for -998 for every pod's sandbox: clamp to the current value instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
EOF
  start containerd containerd --config "$dir/containerd/config.toml"
  wait_for containerd 60 ctr version
  import_images
}

start_kubelet() {
  mkdir -p "$dir/kubelet"
  cat >"$dir/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $dir/pki/kubelet-serving.crt
tlsPrivateKeyFile: $dir/pki/kubelet-serving.key
containerRuntimeEndpoint: unix://$containerd_sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [$ip]
resolvConf: /etc/resolv.conf
podCIDR: $pod_cidr
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
serializeImagePulls: false
EOF
  start kubelet "$bin/kubelet" \
    --config "$dir/kubelet/config.yaml" \
    --kubeconfig "$dir/kubelet.kubeconfig" \
    --root-dir "$kubelet_root" \
    --hostname-override "$node" --node-ip "$ip"
  wait_for "node $node" 180 kubectl wait --for condition=Ready "node/$node" --timeout 1s
}

start_proxy() {
  mkdir -p "$dir/kube-proxy"
  cat >"$dir/kube-proxy/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $dir/kube-proxy.kubeconfig}
hostnameOverride: $node
bindAddress: $ip
clusterCIDR: $cluster_cidr
mode: iptables
# Leave the host's conntrack table size alone (it is not ours to resize).
conntrack: {maxPerCore: 0}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOF
  start kube-proxy "$bin/kube-proxy" --config "$dir/kube-proxy/config.yaml"
}

start_coredns() {
  mkdir -p "$dir/coredns"
  cat >"$dir/coredns/Corefile" <<EOF
.:53 {
    bind $ip
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $dir/coredns.kubeconfig openmodel
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
}
EOF
  # CoreDNS lists Services, EndpointSlices, Namespaces (and Pods for "pods").
  kubectl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "openmodel:coredns"}
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "openmodel:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "openmodel:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: openmodel-coredns}]
EOF
  start coredns "$bin/coredns" -conf "$dir/coredns/Corefile"
  wait_for "cluster DNS" 60 resolves kubernetes.default.svc.cluster.local
}

# resolves <name>: asks the cluster DNS for an A record.
resolves() {
  python3 - "$ip" "$1" <<'EOF'
import socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
query = struct.pack(">HHHHHH", 0x4f4d, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
query += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(query, (server, 53))
answer = s.recv(512)
flags, _, answers = struct.unpack(">HHH", answer[2:8])
sys.exit(0 if (flags & 0xF) == 0 and answers > 0 else 1)
EOF
}

up() {
  check_prerequisites
  if running kube-apiserver && running kubelet; then
    # Images rebuilt since the cluster started replace the imported ones.
    import_images
    say "already up; KUBECONFIG=$kubeconfig"
    return
  fi
  local started=$SECONDS
  mkdir -p "$dir"
  make_pki
  local name
  for name in admin kube-controller-manager kube-scheduler kube-proxy kubelet coredns; do
    make_kubeconfig "$name"
  done
  setup_network
  start_etcd
  start_apiserver
  make_storage
  start_controllers
  start_containerd
  start_kubelet
  start_proxy
  start_coredns
  say "up in $((SECONDS - started)) s: node $node at $ip, pods $pod_cidr, Services $service_cidr"
  say "export KUBECONFIG=$kubeconfig"
}

# Kills every process of every pod, through the kubelet's cgroups (a pod's
# processes survive their containerd shim otherwise).
kill_pods() {
  find /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/pids/kubepods.slice -name cgroup.procs 2>/dev/null |
    while read -r procs; do
      xargs -r kill -9 <"$procs" 2>/dev/null || true
    done || true # find fails on the hierarchy that does not exist
  pkill -9 -f "containerd-shim-runc-v2 .*-address $containerd_sock" 2>/dev/null || true
}

remove_cgroups() {
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/kubepods; do
    [ -d "$hierarchy" ] || continue
    find "$hierarchy" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# unmount_under <folder>: unmounts the folder and everything mounted below
# it, deepest first.
unmount_under() {
  local mounts
  mounts=$(awk -v d="${1%/}" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r)
  [ -z "$mounts" ] || echo "$mounts" | xargs -r -n1 umount -l 2>/dev/null || true
}

down() {
  local i name pid
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    name=${components[$i]}
    [ "$name" = containerd ] && kill_pods
    pid=$(pid_of "$name")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
      say "stopped $name"
    fi
    rm -f "$dir/pids/$name.pid"
  done
  kill_pods
  # kube-proxy's rules and the bridge plugin's masquerading rules.
  if [ -x "$bin/kube-proxy" ]; then "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  iptables -t nat -S 2>/dev/null | awk '/^-A POSTROUTING .*CNI-/{ $1 = "-D"; print }' | while read -r rule; do
    eval "iptables -t nat $rule" 2>/dev/null || true
  done
  iptables -t nat -S 2>/dev/null | awk '/^-N CNI-/{print $2}' | while read -r chain; do
    iptables -t nat -F "$chain" 2>/dev/null || true
    iptables -t nat -X "$chain" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
  ip addr del "$ip/32" dev lo 2>/dev/null || true
  unmount_under "$dir"
  unmount_under "$kubelet_root"
  unmount_under "$run_dir"
  remove_cgroups
  rm -rf "$run_dir" "$dir/cni/ipam"
  say "down"
}

# user <name> [group…]: a person's kubeconfig (client certificate signed by
# the cluster CA, so the API server, audit log and admission webhook see
# that user name and those groups); prints its path.
user() {
  local name=${1:-} groups
  [ -n "$name" ] || die "usage: scripts/cluster.sh user NAME [GROUP...]"
  [ -f "$dir/pki/ca.key" ] || die "no cluster CA yet; run scripts/cluster.sh up first"
  shift
  groups=$(IFS=+; echo "$*")
  groups=${groups//+//O=}
  mkdir -p "$dir/users"
  cert "user-$name" "$name" "$groups" ""
  make_kubeconfig "user-$name" "$dir/users/$name.kubeconfig"
  echo "$dir/users/$name.kubeconfig"
}

status() {
  local name state=0
  for name in "${components[@]}"; do
    if running "$name"; then
      say "$name running (pid $(pid_of "$name"))"
    else
      say "$name not running"
      state=1
    fi
  done
  [ $state = 0 ] && kubectl get nodes -o wide
  return $state
}

case "${1:-}" in
  up) up ;;
  down)
    down
    if [ "${2:-}" = --purge ]; then rm -rf "$dir" "$kubelet_root"; say "removed ${dir#"$root"/}"; fi
    ;;
  status) status ;;
  import) import_images ;;
  tools) check_prerequisites ;;
  kubeconfig) echo "$kubeconfig" ;;
  webhook-client-ca) echo "$dir/pki/ca.crt" ;;
  user)
    shift
    user "$@"
    ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
