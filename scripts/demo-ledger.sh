#!/usr/bin/env bash
# The audit ledger on its own, without a cluster: a demo of the ledger file
# and the CLI (scripts/demo.sh is the end-to-end demo on a real cluster).
#
# Creates a ledger with a new signing key, records the life of one model
# (who changed what, which dataset, which weights went live), queries it,
# exports it, verifies it offline with only the public key, proves one entry,
# proves the log only grew, and shows that tampering with the SQLite file is
# caught. Everything lands in demo-out/ (ignored by git).
#
# OPENMODEL_PROFILE=dev uses a debug build (as the test suite does).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${OPENMODEL_PROFILE:-release}"
out="demo-out/ledger"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Checking prerequisites"
scripts/setup.sh

step "Building the openmodel CLI ($profile profile; cached after the first run)"
cargo build --quiet --profile "$profile" -p openmodel
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
om() { "${CARGO_TARGET_DIR:-target}/$dir/openmodel" "$@"; }

rm -rf "$out" && mkdir -p "$out"
export OPENMODEL_LEDGER="$out/ledger.sqlite"

step "Creating a ledger with a new Ed25519 key"
om ledger init --origin demo.openmodel.dev/ledger --key-file "$out/ledger.key" --cluster demo
vkey=$(cat "$out/ledger.key.pub")

obj='"object":{"apiVersion":"serving.openmodel.dev/v1alpha1","kind":"OpenModel","namespace":"search","name":"minilm","uid":"6f1c0d2e","generation":1}'
digest="sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
step "Recording the life of model search/minilm"
om audit record --key-file "$out/ledger.key" --jsonl <<JSON
{"v":1,"kind":"spec.changed","cluster":"demo","source":"admission","actor":{"username":"alice@example.com","uid":"u-1","groups":["search-team"]},$obj,"data":{"operation":"CREATE","patch":[{"op":"add","path":"/spec","value":{"model":{"source":"hf://sentence-transformers/all-MiniLM-L6-v2@c9745ed","digest":"$digest"},"runtime":{"replicas":2}}}]}}
{"v":1,"kind":"dataset.referenced","cluster":"demo","source":"controller","actor":null,$obj,"dedupeKey":"6f1c0d2e/dataset/ms_marco","data":{"name":"ms_marco","uri":"hf://datasets/microsoft/ms_marco@v2.1","license":"cc-by-4.0","role":"training"}}
{"v":1,"kind":"weights.verified","cluster":"demo","source":"controller","actor":null,$obj,"dedupeKey":"6f1c0d2e/weights/$digest","data":{"digest":"$digest","source":"hf://sentence-transformers/all-MiniLM-L6-v2@c9745ed","pod":"minilm-7d9f-abcde"}}
{"v":1,"kind":"model.deployed","cluster":"demo","source":"controller","actor":null,$obj,"dedupeKey":"6f1c0d2e/deployed/1","data":{"digest":"$digest","replicas":2,"image":"openmodel-server:0.1.0","weightsEntry":3}}
JSON

step "Who changed what, and what went live (audit log --model search/minilm)"
om audit log --model search/minilm

step "Exporting the log (C2SP tlog-tiles + JSONL + CSV)"
om audit export "$out/bundle-1"

step "Verifying the export offline with only the public key; keeping its checkpoint"
om audit verify --bundle "$out/bundle-1" --key "$vkey" --save-checkpoint "$out/checkpoint-1"

step "bob scales the model, then it is retired"
om audit record --key-file "$out/ledger.key" --jsonl <<JSON
{"v":1,"kind":"spec.changed","cluster":"demo","source":"admission","actor":{"username":"bob@example.com","groups":["sre"]},$obj,"data":{"operation":"UPDATE","patch":[{"op":"replace","path":"/spec/runtime/replicas","value":4}]}}
{"v":1,"kind":"model.retired","cluster":"demo","source":"controller","actor":null,$obj,"dedupeKey":"6f1c0d2e/retired","data":{"reason":"OpenModel deleted","lastDigest":"$digest"}}
JSON
om audit log --actor bob@example.com

step "A new export is consistent with the checkpoint kept earlier (the log only grew)"
om audit export "$out/bundle-2" >/dev/null
om audit verify --bundle "$out/bundle-2" --key "$vkey" --since-checkpoint "$out/checkpoint-1"

step "A self-contained proof that entry 3 (weights.verified) is in the log"
om audit proof 3 --out "$out/entry-3.tlog-proof"
cat "$out/entry-3.tlog-proof"
om audit verify --proof "$out/entry-3.tlog-proof" --key "$vkey"

step "Tampering with the SQLite file (triggers dropped, one byte of entry 3 changed) is caught"
cp "$out/ledger.sqlite" "$out/tampered.sqlite"
python3 - "$out/tampered.sqlite" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
    db.execute(f"DROP TRIGGER {name}")
leaf = bytearray(db.execute("SELECT leaf FROM entries WHERE idx = 3").fetchone()[0])
leaf[leaf.index(b"minilm-7d9f")] ^= 1  # one bit of the pod name
db.execute("UPDATE entries SET leaf = ? WHERE idx = 3", (bytes(leaf),))
db.commit()
PY
if om --ledger "$out/tampered.sqlite" audit verify --key "$vkey"; then
  echo "demo: tampering was NOT detected" >&2
  exit 1
else
  echo "(exit code $? as expected: verification failed)"
fi

step "Done. Files are in $out/; the untouched ledger still verifies:"
om audit verify --key "$vkey"
