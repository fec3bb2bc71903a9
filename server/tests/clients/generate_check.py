"""Text generation through the unmodified clients: tritonclient[grpc]
(ModelInfer, and ModelStreamInfer streaming token by token) and the openai
package (completions, chat completions, streamed and not), against a
running openmodel-server serving a generative model.

Checks that both protocols give the same greedy text, that streams arrive
in several pieces with the final flag and usage last, that every answer
names the digest and ledger index, that a seed reproduces a sample (the
same one on both protocols), that stop strings, max_tokens and EOS end
sequences as vLLM does on both, that errors are clear (and, on a stream,
leave it open), that a client leaving or cancelling a stream, on
either protocol, cancels its sequence (vllm:request_success_total{
finished_reason="abort"} grows), and that the same chat sent twice shares
its cached prompt the second time (vllm:prefix_cache_hits_total grows) and
answers the same, and with a cache_salt only with the same salt.

Usage: generate_check.py GRPC_URL HTTP_BASE_URL METRICS_URL MODEL DIGEST LEDGER_INDEX
Prints one JSON line of what it saw, for the Rust test to check too.
"""

import json
import queue
import sys
import time
import urllib.request

import numpy as np
import openai
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from readiness import wait_until_ready

grpc_url, http_url, metrics_url, model, digest, ledger_index = sys.argv[1:7]
ledger_index = int(ledger_index)
client = grpcclient.InferenceServerClient(url=grpc_url)
api = openai.OpenAI(base_url=http_url + "/v1", api_key="unused", max_retries=0)
seen = {}

wait_until_ready(client, 180)

PROMPT = "The capital of France is"


def inputs(prompt, stream, params, **flags):
    tensors = []

    def add(name, datatype, value):
        t = grpcclient.InferInput(name, [1], datatype)
        t.set_data_from_numpy(np.array([value], dtype=np.object_ if datatype == "BYTES" else bool))
        tensors.append(t)

    add("text_input", "BYTES", prompt.encode())
    add("stream", "BOOL", stream)
    add("sampling_parameters", "BYTES", json.dumps(params).encode())
    for name, value in flags.items():
        add(name, "BOOL", value)
    return tensors


def check_provenance(params):
    assert params["model_digest"].string_param == digest, params
    assert params["ledger_index"].int64_param == ledger_index, params


# 1. ModelInfer, greedy, the prompt excluded.
greedy = {"temperature": 0, "max_tokens": 24, "ignore_eos": True}
r = client.infer(model, inputs(PROMPT, False, greedy, exclude_input_in_output=True,
                               return_finish_reason=True, return_num_input_tokens=True,
                               return_num_output_tokens=True))
whole = r.as_numpy("text_output")[0].decode()
assert r.as_numpy("finish_reason")[0] == b"length", r.as_numpy("finish_reason")
assert r.as_numpy("num_output_tokens")[0] == 24, r.as_numpy("num_output_tokens")
prompt_tokens = int(r.as_numpy("num_input_tokens")[0])
check_provenance(r.get_response().parameters)
seen["triton_whole"] = whole
# Without exclude_input_in_output the prompt comes first (as the vLLM backend).
r = client.infer(model, inputs(PROMPT, False, greedy))
assert r.as_numpy("text_output")[0].decode() == PROMPT + whole

# 2. ModelStreamInfer: the same text in several pieces, the last one final.
responses = queue.Queue()
client.start_stream(callback=lambda result, error: responses.put((result, error)))
client.async_stream_infer(model, inputs(PROMPT, True, greedy, return_finish_reason=True,
                                        return_num_output_tokens=True), request_id="a")
pieces, counts = [], []
while True:
    result, error = responses.get(timeout=120)
    assert error is None, error
    response = result.get_response()
    assert response.id == "a"
    check_provenance(response.parameters)
    pieces.append(result.as_numpy("text_output")[0].decode())
    counts.append(int(result.as_numpy("num_output_tokens")[0]))
    if response.parameters["triton_final_response"].bool_param:
        assert result.as_numpy("finish_reason")[0] == b"length"
        break
assert "".join(pieces) == whole, (pieces, whole)
assert len(pieces) >= 8, f"the stream came in {len(pieces)} pieces, not token by token"
assert sum(counts) == 24, counts
seen["stream_pieces"] = len(pieces)

# 3. An error on the stream arrives as its error, and the stream stays open.
client.async_stream_infer(model, inputs(PROMPT, True, {"temperature": -1}), request_id="bad")
result, error = responses.get(timeout=60)
assert error is not None and "temperature" in str(error), error
client.async_stream_infer(model, inputs(PROMPT, True, {"temperature": 0, "max_tokens": 2}), request_id="after")
texts = []
while True:
    result, error = responses.get(timeout=60)
    assert error is None, error
    texts.append(result.as_numpy("text_output")[0].decode())
    if result.get_response().parameters["triton_final_response"].bool_param:
        break
assert "".join(texts) == whole[: len("".join(texts))], texts
client.stop_stream()

# 4. Over ModelInfer too: a seed repeats a sample, a stop string ends the
# text before it, EOS ends a chat-formatted prompt by itself.
seeded = {"temperature": 0.9, "max_tokens": 16, "seed": 1234}
triton_sampled = [client.infer(model, inputs(PROMPT, False, seeded, exclude_input_in_output=True))
                  .as_numpy("text_output")[0].decode() for _ in range(2)]
assert triton_sampled[0] == triton_sampled[1], triton_sampled
stop_at = whole.split()[1]
r = client.infer(model, inputs(PROMPT, False, {"temperature": 0, "max_tokens": 24, "stop": [stop_at]},
                               exclude_input_in_output=True, return_finish_reason=True))
assert r.as_numpy("finish_reason")[0] == b"stop", r.as_numpy("finish_reason")
assert r.as_numpy("text_output")[0].decode() == whole[: whole.index(stop_at)], (r.as_numpy("text_output"), stop_at)
# SmolLM2's chat template, rendered for the chat below (special tokens in a
# text prompt are read as such, as vLLM reads them).
CHAT_PROMPT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
               "<|im_end|>\n<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n")
r = client.infer(model, inputs(CHAT_PROMPT, False, {"temperature": 0, "max_tokens": 400},
                               exclude_input_in_output=True, return_finish_reason=True,
                               return_num_output_tokens=True))
assert r.as_numpy("finish_reason")[0] == b"stop", r.as_numpy("finish_reason")
assert r.as_numpy("num_output_tokens")[0] < 400, r.as_numpy("num_output_tokens")
triton_chat_answer = r.as_numpy("text_output")[0].decode()

# 5. Bad requests over gRPC: clear INVALID_ARGUMENT / NOT_FOUND.
def wrong_type():
    t = grpcclient.InferInput("text_input", [1], "FP32")
    t.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    return client.infer(model, [t])


for what, call, needle in [
    ("wrong tensor type", wrong_type, "must be BYTES"),
    ("prompt too long", lambda: client.infer(model, inputs("word " * 200, False, greedy)), "--max-prompt-tokens"),
    ("unknown parameter", lambda: client.infer(model, inputs(PROMPT, False, {"temprature": 1})), "temprature"),
    ("invalid JSON", lambda: client.infer(model, inputs(PROMPT, False, "not json")), "JSON"),
    ("out of range", lambda: client.infer(model, inputs(PROMPT, False, {"top_p": 2})), "top_p"),
    ("unknown model", lambda: client.infer("nope", inputs(PROMPT, False, greedy)), "nope"),
    ("stream on ModelInfer", lambda: client.infer(model, inputs(PROMPT, True, greedy)), "ModelStreamInfer"),
]:
    try:
        call()
    except InferenceServerException as e:
        assert needle in e.message(), (what, e.message())
        continue
    sys.exit(f"{what}: answered instead of refused")

# 6. OpenAI completions: the same greedy text, headers naming the weights.
raw = api.completions.with_raw_response.create(model=model, prompt=PROMPT, max_tokens=24,
                                                temperature=0, extra_body={"ignore_eos": True})
assert raw.headers["x-openmodel-model-digest"] == digest, raw.headers
assert raw.headers["x-openmodel-ledger-index"] == str(ledger_index), raw.headers
completion = raw.parse()
assert completion.choices[0].text == whole, (completion.choices[0].text, whole)
assert completion.choices[0].finish_reason == "length"
assert completion.usage.completion_tokens == 24
assert completion.usage.prompt_tokens == prompt_tokens

# Seeded sampling repeats itself; max_tokens and stop strings end it.
sampled = [api.completions.create(model=model, prompt=PROMPT, max_tokens=16, temperature=0.9,
                                  seed=1234).choices[0].text for _ in range(2)]
assert sampled[0] == sampled[1], sampled
assert sampled[0] == triton_sampled[0], ("the same seed gave different text over the two protocols",
                                         sampled[0], triton_sampled[0])
stopped = api.completions.create(model=model, prompt=PROMPT, max_tokens=24, temperature=0,
                                 stop=[stop_at])
assert stopped.choices[0].finish_reason == "stop", stopped
assert stopped.choices[0].text == whole[: whole.index(stop_at)], (stopped.choices[0].text, stop_at)
# EOS: a chat answer ends by itself well before a generous max_tokens.
ended = api.chat.completions.create(model=model, max_tokens=400, temperature=0,
                                    messages=[{"role": "user", "content": "Say hello."}])
assert ended.choices[0].finish_reason == "stop", ended
assert ended.usage.completion_tokens < 400
assert ended.choices[0].message.content == triton_chat_answer, (ended.choices[0].message.content,
                                                                triton_chat_answer)
seen["chat_answer"] = ended.choices[0].message.content

# 7. Streamed chat: a role chunk, content chunks, usage with the last.
chunks = list(api.chat.completions.create(model=model, max_tokens=400, temperature=0, stream=True,
                                          stream_options={"include_usage": True},
                                          messages=[{"role": "user", "content": "Say hello."}]))
content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert content == ended.choices[0].message.content, (content, ended.choices[0].message.content)
assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2, chunks
assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == ended.usage.completion_tokens
seen["chat_chunks"] = len(chunks)

# 8. OpenAI errors: clear, with the right class.
for what, call, error, needle in [
    ("bad temperature", lambda: api.completions.create(model=model, prompt=PROMPT, temperature=-1),
     openai.BadRequestError, "temperature"),
    ("unknown model", lambda: api.completions.create(model="nope", prompt=PROMPT), openai.NotFoundError, "nope"),
    ("too long", lambda: api.completions.create(model=model, prompt="word " * 200),
     openai.BadRequestError, "--max-prompt-tokens"),
    ("too many tokens", lambda: api.completions.create(model=model, prompt=PROMPT, max_tokens=10**9),
     openai.BadRequestError, "max_tokens"),
]:
    try:
        call()
    except error as e:
        assert needle in str(e), (what, str(e))
        continue
    sys.exit(f"{what}: answered instead of refused")
models = api.models.list()
assert [m.id for m in models.data] == [model]


# 9. A client that leaves a stream cancels its sequence, on either protocol.
def aborted():
    text = urllib.request.urlopen(metrics_url).read().decode()
    for line in text.splitlines():
        if line.startswith('vllm:request_success_total{finished_reason="abort"}'):
            return float(line.split()[-1])
    return 0.0


def wait_for_abort(before, what):
    deadline = time.time() + 30
    while aborted() <= before:
        if time.time() > deadline:
            sys.exit(f"{what} was not aborted within 30 s")
        time.sleep(0.1)


long_run = {"temperature": 0, "max_tokens": 2000, "ignore_eos": True}
before = aborted()
stream = api.completions.create(model=model, prompt=PROMPT, max_tokens=2000, temperature=0,
                                stream=True, extra_body={"ignore_eos": True})
for i, _ in enumerate(stream):
    if i == 3:
        break
stream.close()
wait_for_abort(before, "an OpenAI stream the client closed")

before = aborted()
responses = queue.Queue()
client.start_stream(callback=lambda result, error: responses.put((result, error)))
client.async_stream_infer(model, inputs(PROMPT, True, long_run), request_id="long")
for _ in range(3):
    result, error = responses.get(timeout=60)
    assert error is None, error
client.stop_stream(cancel_requests=True)
wait_for_abort(before, "a ModelStreamInfer request the client cancelled")


# 10. Prefix caching: the same chat twice; the second starts from the
# first's cached prompt (vllm:prefix_cache_hits_total grows by whole tiles
# of 16 tokens) and answers the same greedy text.
def counter(name):
    text = urllib.request.urlopen(metrics_url).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    sys.exit(f"{name} is not among the metrics")


chat = [
    {"role": "system", "content": "You are a careful assistant for platform engineers. "
                                  "Answer in one short sentence."},
    {"role": "user", "content": "What does a Kubernetes operator do?"},
]
answers = []
hits = []
for _ in range(2):
    hits.append(counter("vllm:prefix_cache_hits_total"))
    r = api.chat.completions.create(model=model, messages=chat, max_tokens=12, temperature=0)
    answers.append(r.choices[0].message.content)
shared = counter("vllm:prefix_cache_hits_total") - hits[1]
assert shared >= 16 and shared % 16 == 0, (hits, shared)
assert answers[0] == answers[1], answers
# The usage says so, as OpenAI's does: prompt_tokens_details.cached_tokens.
assert r.usage.prompt_tokens_details.cached_tokens == shared, (r.usage, shared)
seen["prefix_cache_shared_tokens"] = shared


# 11. cache_salt (vLLM's): the same chat salted shares only with the same
# salt; a bad salt is refused with a clear error.
def cached(salt):
    r = api.chat.completions.create(model=model, messages=chat, max_tokens=12, temperature=0,
                                    extra_body={"cache_salt": salt})
    assert r.choices[0].message.content == answers[0], (salt, r.choices[0].message.content)
    return r.usage.prompt_tokens_details.cached_tokens


salted = [cached("tenant-a"), cached("tenant-b"), cached("tenant-a")]
assert salted[0] == 0 and salted[1] == 0 and salted[2] == shared, (salted, shared)
for bad, says in [("", "empty"), ("x" * 257, "at most 256"), ("a\nb", "control character")]:
    try:
        cached(bad)
        sys.exit(f"cache_salt {bad!r} was accepted")
    except openai.BadRequestError as e:
        assert "cache_salt" in str(e) and says in str(e), e
seen["cache_salt_cached_tokens"] = salted

print(json.dumps(seen))
