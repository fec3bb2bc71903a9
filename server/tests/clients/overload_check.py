"""Overload: with --max-concurrent-requests 2, many simultaneous requests
must partly succeed and partly get RESOURCE_EXHAUSTED naming the limit.

Usage: overload_check.py URL MODEL
"""

import sys
import threading

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from readiness import wait_until_ready

url, model = sys.argv[1:3]
probe = grpcclient.InferenceServerClient(url=url)
wait_until_ready(probe, 120)

texts = np.array([("a fairly long sentence about model serving " * 20).encode()] * 32, dtype=np.object_)
results = []


def one():
    client = grpcclient.InferenceServerClient(url=url)
    inp = grpcclient.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(texts)
    try:
        client.infer(model, [inp], parameters={"truncate": True})
        results.append("ok")
    except InferenceServerException as e:
        results.append((str(e.status()), e.message()))


threads = [threading.Thread(target=one) for _ in range(12)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ok = results.count("ok")
refused = [r for r in results if r != "ok"]
assert ok >= 1, results
assert refused, "no request was refused at a limit of 2 concurrent requests"
for status, message in refused:
    assert "RESOURCE_EXHAUSTED" in status and "limit of 2 concurrent requests" in message, (status, message)
print(f"overload: {ok} served, {len(refused)} refused with RESOURCE_EXHAUSTED")
