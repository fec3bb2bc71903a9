"""llama.cpp's side of scripts/bench-generate.sh: on the same GGUF file and
threads as our engine, the prefill time of a 128-token prompt (median of
5) and of 512 and 2048 tokens (the prompt repeated, as ours; median of 3),
the decode tokens/s of one greedy stream of 128 new tokens, printed as
one JSON line. llama-cpp-python serves one sequence at a time, so there is
no concurrent figure for it.

Usage: llamacpp_generate.py GGUF THREADS PROMPT_IDS_JSON
"""

import json
import statistics
import sys
import time

import llama_cpp
import numpy as np

gguf, threads, prompt_json = sys.argv[1], int(sys.argv[2]), sys.argv[3]
prompt = json.loads(prompt_json)
NEW = 128
LONG = [512, 2048]
llm = llama_cpp.Llama(model_path=gguf, n_ctx=max(LONG) + NEW, n_batch=512, n_threads=threads,
                      n_threads_batch=threads, logits_all=False, verbose=False)


def run():
    llm.reset()
    started = time.perf_counter()
    llm.eval(prompt)
    prefill = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(NEW):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([token])
    decode = time.perf_counter() - started
    return prefill, NEW / decode


def long_prefill(length):
    ids = (prompt * (length // len(prompt) + 1))[:length]
    times = []
    for _ in range(3):
        llm.reset()
        started = time.perf_counter()
        llm.eval(ids)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


run()  # warm-up
runs = [run() for _ in range(5)]
long = {str(n): long_prefill(n) * 1e3 for n in LONG}
print(json.dumps({
    "engine": "llama.cpp",
    "version": llama_cpp.__version__,
    "threads": threads,
    "prompt_tokens": len(prompt),
    "new_tokens": NEW,
    "prefill_ms": statistics.median(r[0] for r in runs) * 1e3,
    "long_prefill_ms": long,
    "decode_tokens_per_s": statistics.median(r[1] for r in runs),
}))
