"""Streams a text generation from an OpenModel through Triton's
ModelStreamInfer, with the unmodified Triton client (pip install
'tritonclient[grpc]') and the tensors of Triton's vLLM backend.

Usage: python generate.py HOST:PORT MODEL PROMPT [MAX_TOKENS]

Prints the text as it arrives, piece by piece, then how many pieces came,
the finish reason, and the provenance every answer carries: the weights'
manifest digest (`model_digest`) and the index of their `weights.verified`
entry in the audit ledger (`ledger_index`).
"""

import json
import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient


def tensor(name, datatype, value):
    t = grpcclient.InferInput(name, [1], datatype)
    t.set_data_from_numpy(np.array([value], dtype=np.object_ if datatype == "BYTES" else bool))
    return t


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    url, model, prompt = sys.argv[1], sys.argv[2], sys.argv[3]
    max_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 32
    client = grpcclient.InferenceServerClient(url=url)
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    params = {"temperature": 0, "max_tokens": max_tokens}
    client.async_stream_infer(model, [
        tensor("text_input", "BYTES", prompt.encode()),
        tensor("stream", "BOOL", True),
        tensor("sampling_parameters", "BYTES", json.dumps(params).encode()),
        tensor("return_finish_reason", "BOOL", True),
    ])
    pieces = 0
    print(f"  {prompt}", end="", flush=True)
    while True:
        result, error = answers.get(timeout=120)
        if error is not None:
            client.stop_stream()
            sys.exit(f"\nerror: {error}")
        pieces += 1
        print(result.as_numpy("text_output")[0].decode(), end="", flush=True)
        parameters = result.get_response().parameters
        if parameters["triton_final_response"].bool_param:
            break
    client.stop_stream()
    print(f"\n  {pieces} streamed responses; finish_reason: {result.as_numpy('finish_reason')[0].decode()}")
    print(f"  model_digest: {parameters['model_digest'].string_param}")
    if "ledger_index" in parameters:
        print(f"  ledger_index: {parameters['ledger_index'].int64_param}")


if __name__ == "__main__":
    main()
