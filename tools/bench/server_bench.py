"""End-to-end benchmark of openmodel-server against sentence-transformers.

Run through scripts/bench-server.sh, which starts the server and passes:
  server_bench.py client URL MODEL   (in the tritonclient venv)
  server_bench.py peer MODEL_DIR THREADS   (in the sentence-transformers venv)
Each mode prints one JSON line of figures; the shell script prints them side
by side.

Inputs are deterministic: "short" sentences of about 16 tokens and "long"
ones of about 128 tokens (word-pieces, [CLS]/[SEP] included).
"""

import json
import sys
import threading
import time

WORDS = ("model serving audit ledger proof digest tensor batch token kernel latency throughput "
         "cluster operator weights dataset embedding vector search ranking query answer").split()


def sentence(i, words):
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(words))


SHORT = [sentence(i, 11) for i in range(512)]   # ~16 tokens with [CLS]/[SEP]
LONG = [sentence(i, 100) for i in range(256)]   # ~128 tokens


def client(url, model):
    import numpy as np
    import tritonclient.grpc as grpcclient

    def one(c, text):
        inp = grpcclient.InferInput("text", [1], "BYTES")
        inp.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
        c.infer(model, [inp])

    probe = grpcclient.InferenceServerClient(url=url)
    deadline = time.time() + 120
    while not probe.is_server_ready():
        if time.time() > deadline:
            sys.exit("server not ready")
        time.sleep(0.2)
    for t in SHORT[:20]:
        one(probe, t)
    out = {}
    for name, texts in (("short", SHORT), ("long", LONG)):
        for conc in (1, 8, 32):
            work = list(texts)
            lock = threading.Lock()

            def worker():
                c = grpcclient.InferenceServerClient(url=url)
                while True:
                    with lock:
                        if not work:
                            return
                        t = work.pop()
                    one(c, t)

            start = time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(conc)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            out[f"{name}_c{conc}"] = len(texts) / (time.perf_counter() - start)
    # The peer's shape exactly: one request carrying 32 texts at a time.
    for name, texts in (("short", SHORT), ("long", LONG)):
        inp = grpcclient.InferInput("text", [32], "BYTES")
        start = time.perf_counter()
        for i in range(0, len(texts), 32):
            inp.set_data_from_numpy(np.array([t.encode() for t in texts[i:i + 32]], dtype=np.object_))
            probe.infer(model, [inp])
        out[f"{name}_r32"] = len(texts) / (time.perf_counter() - start)
    lat = []
    for t in SHORT[:300]:
        s = time.perf_counter()
        one(probe, t)
        lat.append(time.perf_counter() - s)
    lat.sort()
    out["p50_ms"] = lat[len(lat) // 2] * 1000
    out["p99_ms"] = lat[int(len(lat) * 0.99)] * 1000
    print(json.dumps(out))


def peer(model_dir, threads):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(int(threads))
    model = SentenceTransformer(model_dir, device="cpu")
    model.encode(SHORT[:32])
    out = {}
    for name, texts in (("short", SHORT), ("long", LONG)):
        start = time.perf_counter()
        model.encode(texts, batch_size=32)
        out[f"{name}_b32"] = len(texts) / (time.perf_counter() - start)
    lat = []
    for t in SHORT[:300]:
        s = time.perf_counter()
        model.encode([t])
        lat.append(time.perf_counter() - s)
    lat.sort()
    out["p50_ms"] = lat[len(lat) // 2] * 1000
    out["p99_ms"] = lat[int(len(lat) * 0.99)] * 1000
    out["tokens_short"] = sum(len(model.tokenizer(t)["input_ids"]) for t in SHORT) / len(SHORT)
    out["tokens_long"] = sum(len(model.tokenizer(t)["input_ids"]) for t in LONG) / len(LONG)
    out["torch"] = torch.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    {"client": client, "peer": peer}[sys.argv[1]](*sys.argv[2:])
