#!/usr/bin/env python3
"""The GPU check: openmodel-server on a device beside PyTorch on the same one.

Run by scripts/gpu-check.sh (read its header), never by hand on a lent
machine, where every minute counts. Needs torch and transformers (there:
installed; here: the reference virtualenv) and the standard library.

    check.py --binary PATH --device cuda|candle-cpu --out FILE [--dry-run]

Makes its models on the spot (no weights travel, nothing is downloaded):

- three tiny random checkpoints (Llama, Qwen2, Qwen3) by
  tools/reference/tiny_checkpoint.py, the same files the CPU tests use:
  `openmodel-server logits --dtype f32` against transformers' FP32 logits at
  the prompt and at 32 greedy steps (within 1e-3) and its greedy tokens
  (identical);
- a random BERT the shape of all-MiniLM-L6-v2 with a WordPiece tokenizer:
  embeddings served over /v1/embeddings (mean pooling) against transformers
  on the same device, cosine >= 0.9999 in FP32 and >= 0.999 in FP16; and
  tokens/s of both over the same batches;
- a random Llama the shape of SmolLM2-135M (FP16) with a byte-level
  tokenizer: decode tokens/s of /v1/completions (128 new tokens,
  ignore_eos) at 1 and 32 concurrent streams, beside transformers'
  generate() with batches of 1 and 32.

Writes one JSON of figures and verdicts to --out; exits 1 when a parity
check fails. --dry-run (for the test suite, on a CPU) shrinks the models
and the runs; every step still runs.
"""

import argparse
import concurrent.futures
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TINY = os.path.join(ROOT, "tools", "reference", "tiny_checkpoint.py")

LOGIT_TOLERANCE = 1e-3
COSINE_F32 = 0.9999
COSINE_F16 = 0.999
GREEDY_STEPS = 32
TEXTS = [
    "The capital of France is Paris.",
    "a model served with proof of its weights",
    "kubernetes operators reconcile custom resources into deployments",
    "the quick brown fox jumps over the lazy dog " * 6,
    "audit ledgers are append only and tamper evident",
    "gpu",
]


def log(*args):
    print("gpu-check:", *args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """openmodel-server serve on free ports, stopped on exit."""

    def __init__(self, binary, model_dir, device, dtype, name, extra=()):
        self.http = free_port()
        self.metrics = free_port()
        self.name = name
        args = [
            binary, "serve", "--model-dir", model_dir, "--model-name", name,
            "--device", device, "--dtype", dtype,
            "--http-listen", f"127.0.0.1:{self.http}",
            "--grpc-listen", f"127.0.0.1:{free_port()}",
            "--metrics-listen", f"127.0.0.1:{self.metrics}",
            *extra,
        ]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def __enter__(self):
        deadline = time.time() + 240
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"openmodel-server exited ({self.proc.returncode}):\n{self.output()}")
            try:
                # /v1/models lists the model while it still loads (and warms
                # up on a GPU); /readyz answers 200 once it serves
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/readyz", timeout=5) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise SystemExit(f"openmodel-server was not ready within 240 s:\n{self.output()}")

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def post(self, path, body):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http}{path}",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise SystemExit(f"{path}: HTTP {e.code}: {e.read().decode(errors='replace')}")


def generation_parity(torch, binary, device, work):
    """Tiny Llama, Qwen2, Qwen3 in FP32: logits and greedy tokens."""
    from transformers import AutoModelForCausalLM

    results = {}
    prompt = [1, 15, 27, 99, 3, 200, 45, 8]
    for arch in ("llama", "qwen2", "qwen3"):
        folder = os.path.join(work, "tiny-" + arch)
        subprocess.run([sys.executable, TINY, "--arch", arch, "--seed", "7", "--out", folder],
                       check=True, stdout=subprocess.DEVNULL)
        done = subprocess.run(
            [binary, "logits", "--model-dir", folder, "--device", device, "--dtype", "f32",
             "--prompt-ids", ",".join(map(str, prompt)), "--steps", str(GREEDY_STEPS)],
            capture_output=True, text=True)
        if done.returncode != 0:
            results[arch] = {"ok": False, "error": f"openmodel-server logits exited {done.returncode}: {done.stderr[-2000:]}"}
            log(f"{arch}: {results[arch]['error']}")
            continue
        ours = json.loads(done.stdout)
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).to(TORCH_DEVICE).eval()
        worst, tokens = 0.0, []
        with torch.no_grad():
            ids = list(prompt)
            for step in range(GREEDY_STEPS + 1):
                # teacher-forced on our tokens, so every row is comparable
                logits = model(torch.tensor([ids], device=TORCH_DEVICE)).logits[0, -1].float().cpu()
                mine = torch.tensor(ours["logits"][step])
                worst = max(worst, float((logits - mine).abs().max()))
                if step < GREEDY_STEPS:
                    tokens.append(int(logits.argmax()))
                    ids.append(ours["tokens"][step])
        results[arch] = {
            "max_abs_logit_diff": worst,
            "greedy_identical": tokens == ours["tokens"],
            "ok": worst <= LOGIT_TOLERANCE and tokens == ours["tokens"],
        }
        log(f"{arch}: logits within {worst:.2e} of transformers, greedy tokens identical: {tokens == ours['tokens']}")
    return results


def wordpiece_bert(torch, folder, shape):
    """A random BERT with a WordPiece tokenizer, as a model folder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, decoders
    from transformers import BertConfig, BertModel

    words = sorted({w for t in TEXTS for w in t.lower().replace(".", " . ").split()})
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["."]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + ["##" + c for c in letters] + words
    vocab += [f"[unused{i}]" for i in range(shape["vocab"] - len(vocab))]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.decoder = decoders.WordPiece()
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=shape["hidden"],
                        num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                        intermediate_size=4 * shape["hidden"], max_position_embeddings=512)
    BertModel(config).eval().save_pretrained(folder, safe_serialization=True)
    return tok


def bert_reference(torch, folder, tok, texts, dtype):
    """Mean-pooled BERT states by transformers, and its tokens/s."""
    from transformers import BertModel

    model = BertModel.from_pretrained(folder, torch_dtype=dtype).to(TORCH_DEVICE).eval()
    encodings = [tok.encode(t).ids for t in texts]
    longest = max(map(len, encodings))
    ids = torch.tensor([e + [0] * (longest - len(e)) for e in encodings], device=TORCH_DEVICE)
    mask = torch.tensor([[1] * len(e) + [0] * (longest - len(e)) for e in encodings], device=TORCH_DEVICE)
    with torch.no_grad():
        def run():
            states = model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            m = mask.unsqueeze(-1).float()
            return (states * m).sum(1) / m.sum(1)
        out = run()
        sync(torch)
        start, rounds = time.perf_counter(), 0
        while time.perf_counter() - start < BENCH_SECONDS:
            run()
            rounds += 1
        sync(torch)
        seconds = time.perf_counter() - start
    tokens = sum(map(len, encodings)) * rounds
    return out.cpu(), tokens / seconds


def sync(torch):
    if TORCH_DEVICE == "cuda":
        torch.cuda.synchronize()


def embeddings(torch, binary, device, work, shape):
    """Parity (FP32, FP16) and tokens/s of the embedding server."""
    folder = os.path.join(work, "bert")
    tok = wordpiece_bert(torch, folder, shape)
    texts = TEXTS * shape["repeat"]
    tokens_per_batch = sum(len(tok.encode(t).ids) for t in texts)
    results = {}
    for name, dtype, floor in (("f32", torch.float32, COSINE_F32), ("f16", torch.float16, COSINE_F16)):
        reference, theirs_tps = bert_reference(torch, folder, tok, texts, dtype)
        with Server(binary, folder, device, name, "bert",
                    extra=("--max-client-batch-size", str(len(texts)))) as server:
            body = {"model": "bert", "input": texts}
            ours = server.post("/v1/embeddings", body)
            start, rounds = time.perf_counter(), 0
            while time.perf_counter() - start < BENCH_SECONDS:
                server.post("/v1/embeddings", body)
                rounds += 1
            ours_tps = tokens_per_batch * rounds / (time.perf_counter() - start)
        vectors = torch.tensor([d["embedding"] for d in sorted(ours["data"], key=lambda d: d["index"])])
        cosine = float(torch.nn.functional.cosine_similarity(vectors, reference, dim=1).min())
        results[name] = {"min_cosine": cosine, "floor": floor, "ok": cosine >= floor,
                         "tokens_per_s": {"openmodel": ours_tps, "transformers": theirs_tps}}
        log(f"embeddings {name}: min cosine {cosine:.6f} (floor {floor}); tokens/s ours {ours_tps:.0f}, transformers {theirs_tps:.0f}")
    return results


def byte_level_llama(torch, folder, shape):
    """A random Llama in FP16 with a byte-level tokenizer, as a model folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import LlamaConfig, LlamaForCausalLM

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<|endoftext|>": 0}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    while len(vocab) < shape["vocab"]:
        vocab["\u0120w" + str(len(vocab))] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|endoftext|>", "bos_token": None}, f)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=shape["hidden"],
                         num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                         num_key_value_heads=shape["kv_heads"], intermediate_size=shape["intermediate"],
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=0, eos_token_id=0)
    model = LlamaForCausalLM(config).to(torch.float16).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return tok


def decode_speed(torch, binary, device, work, shape):
    """Decode tokens/s at 1 and many streams, ours beside generate()."""
    from transformers import LlamaForCausalLM

    folder = os.path.join(work, "llama-bench")
    tok = byte_level_llama(torch, folder, shape)
    prompt = "the weights that answered are in the ledger"
    new = shape["new_tokens"]
    results = {}
    torch_dtype = torch.float16 if TORCH_DEVICE == "cuda" else torch.float32
    model = LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch_dtype).to(TORCH_DEVICE).eval()
    ids = tok.encode(prompt).ids
    dtype = "f16" if TORCH_DEVICE == "cuda" else "f32"
    with Server(binary, folder, device, dtype, "llama",
                extra=("--max-num-seqs", str(max(shape["streams"])))) as server:
        body = {"model": "llama", "prompt": prompt, "max_tokens": new, "ignore_eos": True, "temperature": 0}
        server.post("/v1/completions", dict(body, max_tokens=4))
        for streams in shape["streams"]:
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(streams) as pool:
                answers = list(pool.map(lambda _: server.post("/v1/completions", body), range(streams)))
            seconds = time.perf_counter() - start
            made = sum(a["usage"]["completion_tokens"] for a in answers)
            batch = torch.tensor([ids] * streams, device=TORCH_DEVICE)
            with torch.no_grad():
                mask = torch.ones_like(batch)
                model.generate(batch, attention_mask=mask, max_new_tokens=4, min_new_tokens=4,
                               do_sample=False, pad_token_id=0)
                sync(torch)
                t0 = time.perf_counter()
                out = model.generate(batch, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                     do_sample=False, pad_token_id=0)
                sync(torch)
                theirs = (out.shape[1] - len(ids)) * streams / (time.perf_counter() - t0)
            results[str(streams)] = {"openmodel_tokens_per_s": made / seconds,
                                     "transformers_tokens_per_s": theirs,
                                     "new_tokens_per_stream": new}
            log(f"decode, {streams} streams: ours {made / seconds:.1f} tokens/s, transformers generate() {theirs:.1f}")
    return results


def main():
    global TORCH_DEVICE, BENCH_SECONDS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", required=True)
    p.add_argument("--device", required=True, choices=["cuda", "candle-cpu"])
    p.add_argument("--out", required=True)
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args()
    import torch
    import transformers

    TORCH_DEVICE = "cuda" if a.device == "cuda" else "cpu"
    if TORCH_DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu-check: torch sees no CUDA device; on a machine without a GPU use --dry-run")
    dry = a.dry_run
    BENCH_SECONDS = 1.0 if dry else 5.0
    bert = ({"vocab": 1000, "hidden": 64, "layers": 2, "heads": 4, "repeat": 1} if dry else
            {"vocab": 30522, "hidden": 384, "layers": 6, "heads": 12, "repeat": 6})
    llama = ({"vocab": 1000, "hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 128,
              "new_tokens": 8, "streams": [1, 4]} if dry else
             {"vocab": 49152, "hidden": 576, "layers": 30, "heads": 9, "kv_heads": 3, "intermediate": 1536,
              "new_tokens": 128, "streams": [1, 8, 32]})
    started = time.time()
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": "dry-run" if dry else "gpu",
        "device": torch.cuda.get_device_name(0) if TORCH_DEVICE == "cuda" else platform.processor() or "cpu",
        "server_device": a.device,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "openmodel_server": subprocess.run([a.binary, "--version"], capture_output=True,
                                                        text=True, check=True).stdout.strip()},
        "shapes": {"bert": bert, "llama": llama},
    }
    sections = (
        ("generation_parity", lambda work: generation_parity(torch, a.binary, a.device, work)),
        ("embeddings", lambda work: embeddings(torch, a.binary, a.device, work, bert)),
        ("decode", lambda work: decode_speed(torch, a.binary, a.device, work, llama)),
    )
    failed = []
    with tempfile.TemporaryDirectory() as work:
        for name, run in sections:
            failed += run_section(report, name, run, work)
            # written after every section, so a run cut short by its time
            # limit still brings back what it measured
            write_report(report, a.out, failed, started)
    log(f"wrote {a.out} in {report['seconds']} s: " + ("every check passed" if not failed else f"FAILED: {failed}"))
    sys.exit(0 if not failed else 1)


def run_section(report, name, run, work):
    """Runs one section into report[name]; returns the names of what failed.

    A section that breaks (a crash, a server that does not start) is recorded
    with its error and the next one still runs: a lent machine's minutes are
    too few to rerun the whole check for one broken step."""
    section_started = time.time()
    try:
        report[name] = run(work)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - recorded, then reported as failed
        report[name] = {"error": f"{type(e).__name__}: {e}"[-4000:]}
        log(f"{name}: broke: {report[name]['error']}")
        return [name]
    finally:
        report.setdefault("section_seconds", {})[name] = round(time.time() - section_started, 1)
    return [f"{name}.{k}" for k, v in report[name].items() if isinstance(v, dict) and v.get("ok") is False]


def write_report(report, path, failed, started):
    """The report as it stands, with its verdict so far."""
    report["failed"] = failed
    report["ok"] = not failed
    report["seconds"] = round(time.time() - started, 1)
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(path + ".tmp", path)


TORCH_DEVICE = "cpu"
BENCH_SECONDS = 5.0

if __name__ == "__main__":
    main()
