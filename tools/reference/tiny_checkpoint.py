#!/usr/bin/env python3
"""Writes a tiny *random* Hugging Face checkpoint, deterministically from a seed.

Standard library only (no numpy, no torch): it runs in CI with a plain
python3, so the server's tests can make the checkpoints that the committed
reference (server/tests/fixtures/tiny_generation_reference.json, made by
tools/reference/make_generation_reference.py with transformers) describes,
and check their bytes against the SHA-256s recorded there.

    python3 tools/reference/tiny_checkpoint.py --arch llama --seed 7 --out DIR

writes into DIR (created when missing):

    config.json             LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM
    generation_config.json  bos 1, eos 2, greedy
    model.safetensors       every tensor F32, untied lm_head

and prints one line per file, "<sha256 hex>  <file name>" (sha256sum's
format), in that order. With --gguf it writes instead the same tensors as
llama.cpp's converter (convert_hf_to_gguf.py) lays them out, in one file:

    model.gguf              GGUF v3, every tensor F32, no tokenizer

so that the GGUF path of each architecture is checked against the same
transformers reference (see "The GGUF file" below).

Sizes (all three architectures): vocabulary 256, hidden 64, 2 layers,
4 attention heads and 2 key/value heads (grouped-query attention) of
head_dim 16, intermediate (MLP) 128, max_position_embeddings 512,
rope_theta 10000, rms_norm_eps 1e-6, bos 1, eos 2, SiLU, untied embeddings
(tie_word_embeddings false).

Tensors (exactly transformers' names; N = 0, 1):

    model.embed_tokens.weight                     [256, 64]
    model.layers.N.input_layernorm.weight         [64]
    model.layers.N.self_attn.q_proj.weight        [64, 64]   (+ .bias [64], qwen2)
    model.layers.N.self_attn.k_proj.weight        [32, 64]   (+ .bias [32], qwen2)
    model.layers.N.self_attn.v_proj.weight        [32, 64]   (+ .bias [32], qwen2)
    model.layers.N.self_attn.o_proj.weight        [64, 64]
    model.layers.N.self_attn.q_norm.weight        [16]       (qwen3 only)
    model.layers.N.self_attn.k_norm.weight        [16]       (qwen3 only)
    model.layers.N.post_attention_layernorm.weight [64]
    model.layers.N.mlp.gate_proj.weight           [128, 64]
    model.layers.N.mlp.up_proj.weight             [128, 64]
    model.layers.N.mlp.down_proj.weight           [64, 128]
    model.norm.weight                             [64]
    lm_head.weight                                [256, 64]

The random numbers
------------------
Each tensor has its own stream, so that the values of one tensor do not
depend on which others exist. The stream is SplitMix64 (Steele, Lea and
Flood, 2014; the seeding generator of xoshiro), all arithmetic modulo 2**64:

    state = seed XOR fnv1a64(tensor name as UTF-8)
    next():  state += 0x9E3779B97F4A7C15
             z = state
             z = (z XOR (z >> 30)) * 0xBF58476D1CE4E5B9
             z = (z XOR (z >> 27)) * 0x94D049BB133111EB
             return z XOR (z >> 31)

(fnv1a64: offset basis 0xCBF29CE484222325, prime 0x100000001B3, XOR then
multiply, per byte.) The elements, in row-major order, take one next() each:

    u = (next() >> 40) / 2**24 - 0.5        # uniform in [-0.5, 0.5), exact
    value = float32(offset + scale * u)     # computed in float64, rounded once

with, per kind of tensor:

    kind                         offset  scale
    linear weight [out, in]      0       2 / sqrt(in)   (so |w| < 1/sqrt(in))
    embed_tokens                 0       1
    RMSNorm weight (all norms)   1       0.2            (so 0.9 <= w < 1.1)
    bias (qwen2 q/k/v)           0       0.5

The integer steps are exact, u is exact, and the rest is IEEE-754 double
arithmetic (math.sqrt is correctly rounded) rounded once to float32 by
struct, so the bytes are the same on any machine and Python version.

The safetensors file
--------------------
8 bytes: the header's length n (little-endian u64); n bytes: the JSON header
(keys sorted, no spaces, padded with spaces to a multiple of 8 bytes),
{"__metadata__": {"format": "pt"}, name: {"dtype": "F32", "shape": [...],
"data_offsets": [begin, end]}, ...}; then the tensors' little-endian float32
data, concatenated in the order of their sorted names (begin/end are offsets
into that data).
The GGUF file
-------------
GGUF version 3 (the format of ggml's gguf.h), little-endian: "GGUF", the
version (u32), the tensor count and the metadata count (u64 each); the
metadata, each a key (u64 length, UTF-8), a type (u32: 4 u32, 6 f32, 8
string) and its value; the tensor infos, each a name, the number of
dimensions (u32), the dimensions innermost first (u64 each: [in, out] for a
weight transformers shapes [out, in]), the type (u32, 0 = F32) and the
offset of its data (u64) from the start of the data, which follows at the
next multiple of 32 bytes (general.alignment); each tensor's data starts at
a multiple of 32 too.

Metadata: general.architecture (llama, qwen2 or qwen3), general.alignment
32, and under "<arch>.": vocab_size, context_length, embedding_length,
feed_forward_length, block_count, attention.head_count,
attention.head_count_kv, attention.key_length, attention.value_length,
attention.layer_norm_rms_epsilon, rope.freq_base (as the converter writes
them). Tensors are renamed as the converter does (token_embd.weight,
blk.N.attn_norm.weight, blk.N.attn_q.weight, attn_k, attn_v, attn_output,
attn_q.bias…, attn_q_norm.weight, attn_k_norm.weight, ffn_norm.weight,
ffn_gate.weight, ffn_up.weight, ffn_down.weight, output_norm.weight,
output.weight), in the order of tensor_specs. For llama only, the rows of
q_proj and k_proj are permuted within each head as the converter's
LlamaModel.permute does, so that rotary embedding pairs neighbours (ggml's
"normal" RoPE) instead of the two halves: row h*d + 2*j + i of the GGUF
tensor is row h*d + i*d/2 + j of transformers' (d the head dimension, h a
head of q_proj, or of k_proj counted in key/value heads).
"""

import argparse
import hashlib
import json
import math
import os
import struct
import sys

MASK64 = (1 << 64) - 1

VOCAB = 256
HIDDEN = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 16
INTERMEDIATE = 128
MAX_POSITIONS = 512
ROPE_THETA = 10000.0
RMS_NORM_EPS = 1e-6
BOS = 1
EOS = 2

ARCHS = {
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
}


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & MASK64
    return h


def random_values(seed, name, count, offset, scale):
    """`count` float32-representable floats of the tensor `name` (see above)."""
    state = (seed ^ fnv1a64(name.encode("utf-8"))) & MASK64
    out = [0.0] * count
    for i in range(count):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        z ^= z >> 31
        u = (z >> 40) / 16777216.0 - 0.5
        out[i] = offset + scale * u
    return out


def tensor_specs(arch):
    """[(name, shape, kind)] of the architecture's tensors."""
    specs = [("model.embed_tokens.weight", [VOCAB, HIDDEN], "embed")]
    q_out, kv_out = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    for n in range(LAYERS):
        p = f"model.layers.{n}."
        specs += [
            (p + "input_layernorm.weight", [HIDDEN], "norm"),
            (p + "self_attn.q_proj.weight", [q_out, HIDDEN], "linear"),
            (p + "self_attn.k_proj.weight", [kv_out, HIDDEN], "linear"),
            (p + "self_attn.v_proj.weight", [kv_out, HIDDEN], "linear"),
            (p + "self_attn.o_proj.weight", [HIDDEN, q_out], "linear"),
            (p + "post_attention_layernorm.weight", [HIDDEN], "norm"),
            (p + "mlp.gate_proj.weight", [INTERMEDIATE, HIDDEN], "linear"),
            (p + "mlp.up_proj.weight", [INTERMEDIATE, HIDDEN], "linear"),
            (p + "mlp.down_proj.weight", [HIDDEN, INTERMEDIATE], "linear"),
        ]
        if arch == "qwen2":
            specs += [
                (p + "self_attn.q_proj.bias", [q_out], "bias"),
                (p + "self_attn.k_proj.bias", [kv_out], "bias"),
                (p + "self_attn.v_proj.bias", [kv_out], "bias"),
            ]
        if arch == "qwen3":
            specs += [
                (p + "self_attn.q_norm.weight", [HEAD_DIM], "norm"),
                (p + "self_attn.k_norm.weight", [HEAD_DIM], "norm"),
            ]
    specs += [
        ("model.norm.weight", [HIDDEN], "norm"),
        ("lm_head.weight", [VOCAB, HIDDEN], "linear"),
    ]
    return specs


def tensor_bytes(seed, name, shape, kind):
    count = math.prod(shape)
    if kind == "linear":
        offset, scale = 0.0, 2.0 / math.sqrt(shape[1])
    elif kind == "embed":
        offset, scale = 0.0, 1.0
    elif kind == "norm":
        offset, scale = 1.0, 0.2
    elif kind == "bias":
        offset, scale = 0.0, 0.5
    else:
        raise ValueError(kind)
    return struct.pack(f"<{count}f", *random_values(seed, name, count, offset, scale))


def safetensors_bytes(seed, specs):
    header = {"__metadata__": {"format": "pt"}}
    chunks = []
    pos = 0
    for name, shape, kind in sorted(specs, key=lambda s: s[0]):
        data = tensor_bytes(seed, name, shape, kind)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [pos, pos + len(data)]}
        chunks.append(data)
        pos += len(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}

GGUF_ALIGNMENT = 32


def gguf_name(name):
    """llama.cpp's name of transformers' tensor `name`."""
    if name in GGUF_NAMES:
        return GGUF_NAMES[name]
    _, _, layer, rest = name.split(".", 3)
    return f"blk.{layer}.{GGUF_NAMES[rest]}"


def permute_rows(data, rows, cols, heads):
    """The converter's LlamaModel.permute of a [rows, cols] F32 tensor."""
    d = rows // heads
    row_bytes = cols * 4
    out = bytearray(len(data))
    for h in range(heads):
        for i in range(2):
            for j in range(d // 2):
                src = h * d + i * (d // 2) + j
                dst = h * d + 2 * j + i
                out[dst * row_bytes:(dst + 1) * row_bytes] = data[src * row_bytes:(src + 1) * row_bytes]
    return bytes(out)


def gguf_string(text):
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def gguf_metadata(arch):
    """[(key, type, packed value)] of the architecture's GGUF metadata."""
    _, model_type = ARCHS[arch]
    u32 = lambda v: (4, struct.pack("<I", v))  # noqa: E731
    f32 = lambda v: (6, struct.pack("<f", v))  # noqa: E731
    items = [
        ("general.architecture", (8, gguf_string(model_type))),
        ("general.alignment", u32(GGUF_ALIGNMENT)),
    ]
    for key, value in [
        ("vocab_size", u32(VOCAB)),
        ("context_length", u32(MAX_POSITIONS)),
        ("embedding_length", u32(HIDDEN)),
        ("feed_forward_length", u32(INTERMEDIATE)),
        ("block_count", u32(LAYERS)),
        ("attention.head_count", u32(HEADS)),
        ("attention.head_count_kv", u32(KV_HEADS)),
        ("attention.key_length", u32(HEAD_DIM)),
        ("attention.value_length", u32(HEAD_DIM)),
        ("attention.layer_norm_rms_epsilon", f32(RMS_NORM_EPS)),
        ("rope.freq_base", f32(ROPE_THETA)),
    ]:
        items.append((f"{model_type}.{key}", value))
    return items


def gguf_bytes(arch, seed, specs):
    """The GGUF file of the checkpoint (see "The GGUF file" above)."""
    metadata = gguf_metadata(arch)
    header = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(specs), len(metadata)))
    for key, (kind, value) in metadata:
        header += gguf_string(key) + struct.pack("<I", kind) + value
    data = bytearray()
    for name, shape, kind in specs:
        values = tensor_bytes(seed, name, shape, kind)
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = HEADS if name.endswith("q_proj.weight") else KV_HEADS
            values = permute_rows(values, shape[0], shape[1], heads)
        data += b"\0" * (-len(data) % GGUF_ALIGNMENT)
        header += gguf_string(gguf_name(name)) + struct.pack("<I", len(shape))
        header += b"".join(struct.pack("<Q", n) for n in reversed(shape))
        header += struct.pack("<IQ", 0, len(data))
        data += values
    header += b"\0" * (-len(header) % GGUF_ALIGNMENT)
    return bytes(header + data)


def config(arch):
    architecture, model_type = ARCHS[arch]
    c = {
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": RMS_NORM_EPS,
        "rope_theta": ROPE_THETA,
        "rope_scaling": None,
        "initializer_range": 0.02,
        "attention_dropout": 0.0,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
    }
    if arch == "llama":
        c.update({"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1})
    elif arch == "qwen2":
        # Qwen2 always has q/k/v biases (no switch in its config).
        c.update({"use_sliding_window": False, "sliding_window": None, "max_window_layers": LAYERS})
    elif arch == "qwen3":
        c.update(
            {
                "attention_bias": False,
                "use_sliding_window": False,
                "sliding_window": None,
                "max_window_layers": LAYERS,
            }
        )
    return c


def generation_config():
    return {"bos_token_id": BOS, "eos_token_id": EOS, "do_sample": False}


def json_bytes(obj):
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("ascii")


def files(arch, seed, gguf=False):
    """[(file name, bytes)] of the checkpoint, in the order they are printed."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}")
    if not 0 <= seed <= MASK64:
        raise ValueError("the seed must fit in 64 bits")
    if gguf:
        return [("model.gguf", gguf_bytes(arch, seed, tensor_specs(arch)))]
    return [
        ("config.json", json_bytes(config(arch))),
        ("generation_config.json", json_bytes(generation_config())),
        ("model.safetensors", safetensors_bytes(seed, tensor_specs(arch))),
    ]


def write(arch, seed, out, gguf=False):
    """Writes the checkpoint into `out`; returns [(file name, sha256 hex)]."""
    os.makedirs(out, exist_ok=True)
    sums = []
    for name, data in files(arch, seed, gguf):
        path = os.path.join(out, name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        sums.append((name, hashlib.sha256(data).hexdigest()))
    return sums


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--arch", required=True, choices=sorted(ARCHS))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", required=True, help="the folder to write (created when missing)")
    ap.add_argument(
        "--gguf",
        action="store_true",
        help="write model.gguf (F32, llama.cpp's names and layout) instead of the Hugging Face files",
    )
    args = ap.parse_args()
    for name, digest in write(args.arch, args.seed, args.out, args.gguf):
        print(f"{digest}  {name}")


if __name__ == "__main__":
    sys.exit(main())
