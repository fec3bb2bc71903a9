"""Drives openmodel-server with the unmodified tritonclient[grpc] client.

Usage: tritonclient_check.py URL MODEL FIXTURE EXPECTED_DIGEST EXPECTED_LEDGER_INDEX

Checks liveness, readiness, server and model metadata, inference with a
BYTES numpy array (embeddings equal to the sentence-transformers fixture,
model_digest and the int64 ledger_index in the response, the latter absent
when EXPECTED_LEDGER_INDEX is "none"), the truncate/normalize parameters, and that
bad requests get INVALID_ARGUMENT / NOT_FOUND with a useful message.
Exits non-zero with the first failure.
"""

import base64
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from readiness import wait_until_ready

url, model, fixture_path, digest, ledger_index = sys.argv[1:6]
client = grpcclient.InferenceServerClient(url=url)

wait_until_ready(client, 120)

assert client.is_model_ready(model), "model not ready"
meta = client.get_server_metadata()
assert meta.name == "openmodel", meta
mm = client.get_model_metadata(model)
assert [(i.name, i.datatype, list(i.shape)) for i in mm.inputs] == [("text", "BYTES", [-1])], mm
assert [(o.name, o.datatype, list(o.shape)) for o in mm.outputs] == [("embedding", "FP32", [-1, 384])], mm

fixture = json.load(open(fixture_path))
# One request holds at most 32 texts (--max-client-batch-size).
cases = [c for c in fixture["cases"] if not c["truncated"]][:32]


def vec(b64):
    return np.frombuffer(base64.b64decode(b64), dtype="<f4")


def infer(texts, parameters=None, name="text", datatype="BYTES", model_name=model):
    data = np.array([t.encode("utf-8") for t in texts], dtype=np.object_)
    inp = grpcclient.InferInput(name, [len(texts)], datatype)
    inp.set_data_from_numpy(data)
    out = grpcclient.InferRequestedOutput("embedding")
    return client.infer(model_name, [inp], outputs=[out], parameters=parameters)


result = infer([c["text"] for c in cases])
emb = result.as_numpy("embedding")
assert emb.shape == (len(cases), 384), emb.shape
worst = 1.0
for row, case in zip(emb, cases):
    ref = vec(case["embedding"])
    cos = float(np.dot(row, ref) / (np.linalg.norm(row) * np.linalg.norm(ref)))
    worst = min(worst, cos)
    assert cos >= 0.9999, (case["name"], cos)
params = result.get_response().parameters
assert params["model_digest"].string_param == digest, params
if ledger_index == "none":
    assert "ledger_index" not in params, params
else:
    assert params["ledger_index"].WhichOneof("parameter_choice") == "int64_param", params
    assert params["ledger_index"].int64_param == int(ledger_index), params

raw = infer([cases[0]["text"]], parameters={"normalize": False}).as_numpy("embedding")[0]
ref = vec(cases[0]["embedding_unnormalized"])
assert abs(np.linalg.norm(raw) - np.linalg.norm(ref)) / np.linalg.norm(ref) < 1e-4

long_case = next(c for c in fixture["cases"] if c["truncated"])
truncated = infer([long_case["text"]], parameters={"truncate": True}).as_numpy("embedding")[0]
ref = vec(long_case["embedding"])
assert float(np.dot(truncated, ref)) >= 0.9999


def expect_error(code, needle, fn):
    try:
        fn()
    except InferenceServerException as e:
        assert code in str(e.status()), (code, e.status(), e.message())
        assert needle in e.message(), (needle, e.message())
        return
    sys.exit(f"expected {code} containing {needle!r}")


expect_error("INVALID_ARGUMENT", "truncate=true", lambda: infer([long_case["text"]]))
expect_error("INVALID_ARGUMENT", "empty text", lambda: infer([""]))
expect_error("INVALID_ARGUMENT", "must be BYTES", lambda: client.infer(model, [grpcclient.InferInput("text", [1], "FP32").set_data_from_numpy(np.array([1.0], dtype=np.float32))]))
expect_error("NOT_FOUND", "unknown model", lambda: infer(["hi"], model_name="nope"))
print(f"tritonclient: {len(cases)} embeddings, worst cosine {worst:.7f}, digest {digest}, ledger index {ledger_index}")
