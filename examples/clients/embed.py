"""Embeds sentences with an OpenModel through the Open Inference Protocol,
using the unmodified Triton client (pip install 'tritonclient[grpc]').

Usage: python embed.py HOST:PORT MODEL SENTENCE [SENTENCE ...]

Prints each embedding's size and first values, the cosine similarity of the
first two sentences, and the provenance every answer carries: the weights'
manifest digest (`model_digest`) and the index of their `weights.verified`
entry in the audit ledger (`ledger_index`).
"""

import sys

import numpy as np
import tritonclient.grpc as grpcclient


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    url, model, sentences = sys.argv[1], sys.argv[2], sys.argv[3:]
    client = grpcclient.InferenceServerClient(url=url)
    text = grpcclient.InferInput("text", [len(sentences)], "BYTES")
    text.set_data_from_numpy(np.array([s.encode() for s in sentences], dtype=np.object_))
    result = client.infer(model, [text], outputs=[grpcclient.InferRequestedOutput("embedding")])
    embeddings = result.as_numpy("embedding")
    for sentence, vector in zip(sentences, embeddings):
        head = ", ".join(f"{v:+.4f}" for v in vector[:4])
        print(f"  {sentence!r}: {vector.shape[0]} floats [{head}, …]")
    if len(sentences) > 1:
        a, b = embeddings[0], embeddings[1]
        print(f"  cosine similarity of the first two: {float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)):.4f}")
    parameters = result.get_response().parameters
    print(f"  model_digest: {parameters['model_digest'].string_param}")
    if "ledger_index" in parameters:
        print(f"  ledger_index: {parameters['ledger_index'].int64_param}")


if __name__ == "__main__":
    main()
