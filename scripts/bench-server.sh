#!/usr/bin/env bash
# End-to-end benchmark: openmodel-server over gRPC (tritonclient) vs
# sentence-transformers encode in-process, same machine, same thread count,
# in one run. Needs the reference venv (scripts/make-reference.sh; large:
# PyTorch) and the client venv (scripts/client-venv.sh). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${THREADS:-$(nproc)}"
model=$(scripts/fetch-model.sh)
client=$(scripts/client-venv.sh)
peer=".cache/venv-reference/bin/python"
[ -x "$peer" ] || { echo "bench-server: run scripts/make-reference.sh first (sentence-transformers venv)" >&2; exit 1; }
cargo build --quiet --release -p openmodel-server
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/openmodel-server serve --model-dir "$model" --model-name minilm \
  --grpc-listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport" --http-listen 127.0.0.1:0 --threads "$threads" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
ours=$("$client" tools/bench/server_bench.py client "127.0.0.1:$port" minilm)
kill $server; wait $server 2>/dev/null || true
theirs=$(HF_HUB_OFFLINE=1 "$peer" tools/bench/server_bench.py peer "$model" "$threads")
python3 - "$ours" "$theirs" "$threads" <<'PY'
import json, sys
o, p, threads = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
ts, tl = p["tokens_short"], p["tokens_long"]
print(f"openmodel-server (gRPC, tritonclient) vs sentence-transformers encode in-process (torch {p['torch']}), {threads} threads each")
print(f"{'workload':44} {'openmodel':>22} {'sentence-transformers':>24}")
for name, toks in (("short", ts), ("long", tl)):
    for c in (1, 8, 32):
        v = o[f"{name}_c{c}"]
        peer = f"{p[name + '_b32']:.0f} sent/s ({p[name + '_b32'] * toks:.0f} tok/s)" if c == 32 else ""
        label = f"{name} (~{toks:.0f} tokens), concurrency {c}" + (" / batch 32" if c == 32 else "")
        print(f"{label:44} {v:8.0f} sent/s ({v * toks:6.0f} tok/s) {peer:>24}")
    v = o[f"{name}_r32"]
    label = f"{name}, requests of 32 texts, one at a time"
    print(f"{label:44} {v:8.0f} sent/s ({v * toks:6.0f} tok/s)")
print(f"{'single short request p50 / p99':44} {o['p50_ms']:8.2f} / {o['p99_ms']:.2f} ms      {p['p50_ms']:.2f} / {p['p99_ms']:.2f} ms")
PY
