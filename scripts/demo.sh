#!/usr/bin/env bash
# The end-to-end demo, on a real single-node Kubernetes cluster on this
# machine (scripts/cluster.sh: etcd, kube-apiserver, controller-manager,
# scheduler, kubelet with containerd and runc, kube-proxy, CoreDNS):
#
#   1. builds what is missing (third-party builds and downloads cached in the
#      per-user cache, $OPENMODEL_CACHE, linked from .cache/ and target/;
#      docs/testing.md, "The caches"),
#   2. starts the cluster and installs OpenModel with helm,
#   3. serves all-MiniLM-L6-v2 and SmolLM2-135M-Instruct (GGUF) from a local
#      model store (plain HTTP),
#   4. alice applies examples/minilm-local.yaml; the pod fetches the weights,
#      checks their digest and serves them,
#   5. sends a request with the Triton client and prints the answer's digest
#      and ledger index,
#   6. bob scales the model to 2 replicas,
#   7. alice applies examples/smollm2.yaml; a generation streams token by
#      token through the Triton client (ModelStreamInfer) and a chat
#      completion comes through the OpenAI client, each naming its digest
#      and ledger index,
#   8. prints both models' audit trails from the ledger service (every entry
#      proven included in the signed log) and verifies an export offline.
#
#   scripts/demo.sh               run it (the cluster stays up afterwards)
#   scripts/demo.sh down          stop the cluster and the model store
#   scripts/demo.sh down --purge  … and remove their state and demo-out/
#
# Needs root (the cluster), Rust, Go, Python 3; installs Debian packages it
# lacks (containerd, runc, buildah, …). The first run builds Kubernetes and
# the project (about 40 minutes on 2 cores); later runs take a few minutes.
# OPENMODEL_PROFILE=dev builds the binaries in debug (faster to build, as
# scripts/test.sh does); OPENMODEL_DEMO_NO_BUILD=1 takes the binaries and
# images already built (scripts/test.sh builds them for the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
profile="${OPENMODEL_PROFILE:-release}"
out="$root/demo-out"
node_ip=10.200.0.1
store_port=8088
system=openmodel-system
ns=search
started=$SECONDS
step() { printf '\n\033[1m==> %s\033[0m  (%d s)\n' "$1" "$((SECONDS - started))"; }
kubectl() { "$root/.cache/k8s/bin/kubectl" "$@"; }

stop_store() {
  if [ -f "$out/store.pid" ]; then
    kill "$(cat "$out/store.pid")" 2>/dev/null || true
    rm -f "$out/store.pid"
  fi
}

case "${1:-}" in
  down)
    stop_store
    if [ "${2:-}" = --purge ]; then
      scripts/cluster.sh down --purge
      rm -rf "$out"
    else
      scripts/cluster.sh down
    fi
    exit 0
    ;;
  "") ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac

step "Prerequisites: Rust, the model, the Triton client, Kubernetes, helm, image tools (cached)"
scripts/setup.sh
scripts/fetch-model.sh
smollm2_dir=$(scripts/fetch-smollm2.sh)
scripts/client-venv.sh
scripts/build-control-plane.sh
scripts/fetch-helm.sh
scripts/image-tools.sh

step "The images of the operator, the ledger service and the server ($profile build)"
# One build of every binary (the CLI too), so that dependencies are built
# once, with one set of features; the images take the binaries from it.
image_profile=$([ "$profile" = dev ] && echo debug || echo release)
if [ -z "${OPENMODEL_DEMO_NO_BUILD:-}" ]; then
  cargo build --locked --profile "$profile" --workspace --bins
  scripts/build-images.sh --profile "$image_profile" --no-build
fi
target_dir="${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")"
om() { "$target_dir/openmodel" "$@"; }

step "A single-node Kubernetes cluster on this machine"
scripts/cluster.sh up
export KUBECONFIG
KUBECONFIG=$(scripts/cluster.sh kubeconfig)
kubectl get nodes -o wide

step "OpenModel installed with helm (operator ×2, ledger service, webhook)"
installed_before=
if .cache/helm/bin/helm status openmodel -n "$system" >/dev/null 2>&1; then installed_before=yes; fi
# Only kube-apiserver may call the webhook: the chart gets the CA of the client
# certificate it presents to webhooks, and that certificate's name.
.cache/helm/bin/helm upgrade --install openmodel charts/openmodel -n "$system" --create-namespace \
  --set-file webhook.clientAuth.caBundle="$(scripts/cluster.sh webhook-client-ca)" \
  --set 'webhook.clientAuth.names={kube-apiserver-webhook-client}' \
  --wait --timeout 5m
if [ -n "$installed_before" ]; then
  # A rebuilt image keeps its tag: restart onto it.
  kubectl -n "$system" rollout restart deployment/openmodel-operator statefulset/openmodel-ledger >/dev/null
  kubectl -n "$system" rollout status deployment/openmodel-operator --timeout 180s
  kubectl -n "$system" rollout status statefulset/openmodel-ledger --timeout 180s
fi

step "A model store at http://$node_ip:$store_port/ (the weights and their manifest)"
mkdir -p "$out/store"
stop_store
if [ ! -f "$out/store/all-MiniLM-L6-v2/model.safetensors" ]; then
  cp -r .cache/models/all-MiniLM-L6-v2 "$out/store/"
fi
if [ ! -f "$out/store/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  cp -r "$smollm2_dir" "$out/store/"
fi
"$target_dir/openmodel-server" digest "$out/store/SmolLM2-135M-Instruct" -o json \
  >"$out/store/SmolLM2-135M-Instruct/.openmodel-manifest.json"
manifest="$out/store/all-MiniLM-L6-v2/.openmodel-manifest.json"
"$target_dir/openmodel-server" digest "$out/store/all-MiniLM-L6-v2" -o json >"$manifest"
setsid python3 -m http.server --bind "$node_ip" "$store_port" --directory "$out/store" >"$out/store.log" 2>&1 </dev/null &
echo $! >"$out/store.pid"
python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print("serving %d files, digest %s" % (len(m["files"]), m["digest"]))' "$manifest"

step "People: alice and bob (search-team) may edit namespace $ns; a compliance account reads the log"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
alice=$(scripts/cluster.sh user alice search-team)
bob=$(scripts/cluster.sh user bob search-team)
kubectl -n "$ns" create rolebinding editors --clusterrole edit --user alice --user bob \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$system" create serviceaccount compliance --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl create clusterrolebinding openmodel-compliance --clusterrole view \
  --serviceaccount "$system:compliance" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
echo "alice: $alice"
echo "bob:   $bob"

step "alice: kubectl apply -n $ns -f examples/minilm-local.yaml"
kubectl --kubeconfig "$alice" -n "$ns" apply -f examples/minilm-local.yaml

# wait_ready <model> <replicas>: prints the model's conditions while it
# converges.
wait_ready() {
  local model=$1 replicas=$2 waited=0 line last="" generation observed ready
  while :; do
    line=$(kubectl -n "$ns" get openmodel "$model" -o go-template='{{.metadata.generation}} {{.status.observedGeneration}} {{.status.readyReplicas}} {{range .status.conditions}}{{.type}}={{.status}}({{.reason}}) {{end}}' 2>/dev/null || true)
    read -r generation observed ready _ <<<"$line" || true
    if [ "${generation:-}" = "${observed:-x}" ] && [ "${ready:-}" = "$replicas" ] && [[ "$line" == *"Ready=True"* ]]; then
      echo "  ${line#* * * }"
      return 0
    fi
    if [ "$line" != "$last" ]; then
      echo "  ${waited}s: ${line#* * * }"
      last=$line
    fi
    [ "$waited" -lt 300 ] || {
      kubectl -n "$ns" describe openmodel "$model" >&2
      echo "$model was not Ready with $replicas replicas after 300 s" >&2
      exit 1
    }
    sleep 2
    waited=$((waited + 2))
  done
}

step "Waiting until minilm is Ready (the pod fetches the weights and verifies their digest)"
kubectl --kubeconfig "$alice" -n "$ns" patch openmodel minilm --type merge -p '{"spec":{"runtime":{"replicas":1}}}' >/dev/null
wait_ready minilm 1
kubectl -n "$ns" get openmodel,deployment,service,pods

step "A request through the Service, with the unmodified Triton client"
service_ip=$(kubectl -n "$ns" get service minilm -o jsonpath='{.spec.clusterIP}')
# Retried for up to a minute, as a client would: on a second run the cluster
# restarts with the model's old status (Ready) while its pod and the
# Service's rules are still coming back.
client_log=$(mktemp)
for attempt in $(seq 1 30); do
  if .cache/venv-client/bin/python examples/clients/embed.py "$service_ip:8001" minilm \
    "A man is eating food." "A man is eating a piece of bread." 2>"$client_log"; then
    break
  fi
  if [ "$attempt" = 30 ]; then
    cat "$client_log" >&2
    echo "the model did not answer through its Service within 60 s" >&2
    exit 1
  fi
  echo "  the Service did not answer yet ($(tail -n 1 "$client_log" | cut -c1-120)); again in 2 s"
  sleep 2
done
rm -f "$client_log"

step "bob: scale minilm to 2 replicas"
kubectl --kubeconfig "$bob" -n "$ns" scale openmodel minilm --replicas=2
wait_ready minilm 2

step "alice: kubectl apply -n $ns -f examples/smollm2.yaml (text generation: SmolLM2-135M-Instruct, GGUF Q4_1)"
kubectl --kubeconfig "$alice" -n "$ns" apply -f examples/smollm2.yaml
wait_ready smollm2 1

step "A stream token by token through Triton's ModelStreamInfer, and a chat completion through the OpenAI API"
smollm2_ip=$(kubectl -n "$ns" get service smollm2 -o jsonpath='{.spec.clusterIP}')
client_log=$(mktemp)
for attempt in $(seq 1 30); do
  if .cache/venv-client/bin/python examples/clients/generate.py "$smollm2_ip:8001" smollm2 \
    "The three primary colors are" 24 2>"$client_log"; then
    break
  fi
  if [ "$attempt" = 30 ]; then
    cat "$client_log" >&2
    echo "smollm2 did not answer through its Service within 60 s" >&2
    exit 1
  fi
  echo "  the Service did not answer yet ($(tail -n 1 "$client_log" | cut -c1-120)); again in 2 s"
  sleep 2
done
rm -f "$client_log"
.cache/venv-client/bin/python examples/clients/chat.py "http://$smollm2_ip:8000/v1" smollm2 \
  "Say hello."

step "The audit trail of $ns/minilm and $ns/smollm2, from the ledger service (each entry proven included)"
mkdir -p "$out/auditor"
ledger_ip=$(kubectl -n "$system" get service openmodel-ledger -o jsonpath='{.spec.clusterIP}')
kubectl -n "$system" get secret openmodel-ledger-tls -o jsonpath='{.data.ca\.crt}' | base64 -d >"$out/ledger-ca.crt"
export OPENMODEL_SERVER="https://$ledger_ip:8443" OPENMODEL_CA_FILE="$out/ledger-ca.crt"
export OPENMODEL_TLS_SERVER_NAME="openmodel-ledger.$system.svc" XDG_CONFIG_HOME="$out/auditor"
# A token for the ledger's audience (the chart's ledger.tokenAudience): the
# API server itself does not take it.
OPENMODEL_TOKEN=$(kubectl -n "$system" create token compliance --audience openmodel-ledger)
export OPENMODEL_TOKEN
om audit log --model "$ns/minilm" --all
om audit log --model "$ns/smollm2" --all

step "Export the whole log and verify it offline with the log's public key"
rm -rf "$out/audit-export"
om audit export "$out/audit-export"
vkey=$(cat "$out"/auditor/openmodel/keys/*)
echo "verifier key (pinned on first use): $vkey"
(unset OPENMODEL_SERVER; om audit verify --bundle "$out/audit-export" --key "$vkey")

printf '\n\033[1mDone in %d s.\033[0m The cluster keeps running: export KUBECONFIG=%s\n' "$((SECONDS - started))" "$KUBECONFIG"
echo "Stop it with: scripts/demo.sh down"
