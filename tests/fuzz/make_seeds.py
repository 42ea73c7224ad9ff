"""Writes the committed seed corpora (tests/fuzz/corpus/<target>/): small valid inputs of each format, made
from the formats' own specifications (safetensors, llama2.c's run.c, GGUF v3, the request proto's wire
format), so the fuzzers start from inputs that reach deep into each parser. Usage: make_seeds.py OUT_DIR"""
import json
import os
import struct
import sys

import numpy as np

out = sys.argv[1]


def put(target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    for name, array in tensors:
        raw = array.astype(np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


rng = np.random.default_rng(0)
w = lambda *shape: rng.standard_normal(shape).astype(np.float32) * 0.1

put("safetensors", "two_tensors", safetensors([("a.weight", w(4, 8)), ("b.bias", w(8))], {"format": "pt"}))
put("safetensors", "empty", safetensors([]))

# The job target's config: hidden 8, 1 layer, 2 heads (1 KV head), intermediate 16, vocab 16.
layer = "model.layers.0."
llama = [("model.embed_tokens.weight", w(16, 8)), (layer + "input_layernorm.weight", np.ones(8)),
         (layer + "self_attn.q_proj.weight", w(8, 8)), (layer + "self_attn.k_proj.weight", w(4, 8)),
         (layer + "self_attn.v_proj.weight", w(4, 8)), (layer + "self_attn.o_proj.weight", w(8, 8)),
         (layer + "post_attention_layernorm.weight", np.ones(8)), (layer + "mlp.gate_proj.weight", w(16, 8)),
         (layer + "mlp.up_proj.weight", w(16, 8)), (layer + "mlp.down_proj.weight", w(8, 16)),
         ("model.norm.weight", np.ones(8)), ("lm_head.weight", w(16, 8))]
put("job", "tiny_llama", safetensors(llama))
put("safetensors", "tiny_llama", safetensors(llama))

put("safetensors_index", "two_shards", json.dumps({"metadata": {"total_size": 64}, "weight_map": {
    "model.embed_tokens.weight": "model-00001-of-00002.safetensors", "lm_head.weight": "model-00002-of-00002.safetensors"}}))

# llama2.c (run.c): seven int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size [negative:
# unshared classifier], seq_len), then the weights in its fixed order.
dim, hidden, layers, heads, kv, vocab, seq = 8, 16, 1, 2, 1, 16, 8
head = dim // heads
parts = [w(vocab, dim), np.ones((layers, dim)), w(layers, dim, dim), w(layers, kv * head, dim), w(layers, kv * head, dim),
         w(layers, dim, dim), np.ones((layers, dim)), w(layers, hidden, dim), w(layers, dim, hidden), w(layers, hidden, dim),
         np.ones(dim), np.zeros((seq, head // 2)), np.zeros((seq, head // 2))]
put("llama2c", "tiny", struct.pack("<7i", dim, hidden, layers, heads, kv, vocab, seq) +
    b"".join(p.astype(np.float32).tobytes() for p in parts))

put("config", "llama", json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
                                   "num_hidden_layers": 1, "vocab_size": 16, "num_attention_heads": 2,
                                   "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}))
put("config", "qwen3", json.dumps({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 8,
                                   "head_dim": 4, "num_hidden_layers": 1, "vocab_size": 16, "tie_word_embeddings": True}))

# GGUF v3: magic, version, tensor count, kv count, kvs (string key, u32 type, value), tensor infos (name,
# n_dims, dims, ggml type, offset), alignment padding, data.
def gguf_string(s):
    return struct.pack("<Q", len(s)) + s.encode()


kvs = [("general.architecture", 8, gguf_string("llama")), ("llama.block_count", 4, struct.pack("<I", 1)),
       ("llama.embedding_length", 4, struct.pack("<I", 32)), ("general.alignment", 4, struct.pack("<I", 32))]
body = b"".join(gguf_string(k) + struct.pack("<I", t) + v for k, t, v in kvs)
tensor = w(2, 32)
info = gguf_string("token_embd.weight") + struct.pack("<I", 2) + struct.pack("<QQ", 32, 2) + struct.pack("<IQ", 0, 0)
header = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kvs)) + body + info
header += b"\0" * (-len(header) % 32)
put("gguf", "f32_tensor", header + tensor.tobytes())

# tokenizer target: first byte even -> tokenizer.json, odd -> llama2.c tokenizer.bin.
hf = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 3}, "merges": ["a b"]},
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}, "decoder": {"type": "ByteLevel"},
      "added_tokens": [{"id": 4, "content": "<s>", "special": True}]}
put("tokenizer", "hf_bpe", b"\0" + json.dumps(hf).encode())
pieces = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + ["a", "b", "ab"]
bin_tok = struct.pack("<i", 8) + b"".join(struct.pack("<fi", -i, len(p)) + p.encode() for i, p in enumerate(pieces))
put("tokenizer", "llama2c_bin", b"\1" + bin_tok)

put("ids_json", "stream", json.dumps(list(range(1, 100))))
put("ids_json", "windows", json.dumps([[1, 2, 3, 4] * 5, [5, 6, 7, 8] * 5]))


# QuantizeModelRequest on the wire: source_uri (1), destination_uri (2), labels (13, map entries), and a
# method message field; field numbers from proto/lowbit/v1/quantizer.proto.
def field(number, payload):
    key = (number << 3) | 2
    return bytes([key]) + bytes([len(payload)]) + payload


rtn4 = field(3, bytes([1 << 3, 4]))  # rtn { bits: 4 } (bits is field 1, a varint)
put("request", "minimal", field(1, b"m.bin") + field(2, b"out") + rtn4)
put("request", "gptq_layers", field(1, b"m.bin") + field(2, b"out") + field(5, b"") + field(11, field(1, b"*.q_proj")))
put("request", "labels", field(1, b"s3://bucket/m") + field(2, b"s3://bucket/out") + field(13, field(1, b"team") + field(2, b"nlp")) + rtn4)
