"""Hostile requests from the unmodified tritonclient[grpc]: one request of
1,000,000 one-character texts, and one of a 50 MB text. Each must be
refused with INVALID_ARGUMENT naming the limit and its flag, within
MAX_SECONDS of being sent, and the server must still answer a normal
request afterwards.

Usage: hostile_check.py URL MODEL MAX_SECONDS
"""

import sys
import time

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from readiness import wait_until_ready

url, model, max_seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
client = grpcclient.InferenceServerClient(url=url)
wait_until_ready(client, 120)


def refused(what, texts, needles):
    inp = grpcclient.InferInput("text", [len(texts)], "BYTES")
    # Serialized here, before the clock starts: only the server's answer is timed.
    inp.set_data_from_numpy(texts)
    started = time.monotonic()
    try:
        client.infer(model, [inp])
    except InferenceServerException as e:
        took = time.monotonic() - started
        assert "INVALID_ARGUMENT" in str(e.status()), (what, e.status(), e.message())
        for needle in needles:
            assert needle in e.message(), (what, needle, e.message())
        assert took < max_seconds, f"{what}: refused only after {took:.1f} s"
        print(f"{what}: INVALID_ARGUMENT in {took:.2f} s: {e.message()}")
        return
    sys.exit(f"{what}: was answered instead of refused")


refused(
    "1,000,000 one-character texts",
    np.array([b"a"] * 1_000_000, dtype=np.object_),
    ["1000000 texts", "limit of 32 texts per request", "--max-client-batch-size"],
)
refused(
    "one 50 MB text",
    np.array([b"x" * 50_000_000], dtype=np.object_),
    ["text[0] is 50000000 bytes", "limit of 65536 bytes per text", "--max-text-bytes"],
)
inp = grpcclient.InferInput("text", [1], "BYTES")
inp.set_data_from_numpy(np.array([b"still serving"], dtype=np.object_))
assert client.infer(model, [inp]).as_numpy("embedding").shape == (1, 384)
print("hostile: both refused, the server still answers")
