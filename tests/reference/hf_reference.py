#!/usr/bin/python3
"""Tiny random checkpoints of every architecture lowbit runs, and their logits from a reference forward pass.

The forward pass is written here in float64 NumPy from the equations of transformers' modeling files
(modeling_llama.py, modeling_mistral.py, modeling_qwen2.py, modeling_qwen3.py) and modeling_rope_utils.py,
one window at a time with an explicit attention mask, sharing nothing with lowbit's C++ code.

Usage: hf_reference.py OUT_DIR. Writes OUT_DIR/<variant>/{config.json, model.safetensors, windows.json,
logits.f32} (logits of every window, position after position, float32) and OUT_DIR/variants.json.
hf_reference.py --variant NAME --vocab N OUT_DIR writes that one checkpoint with an N-token vocabulary and no
logits (a model that a real tokenizer's ids fit).
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np

VOCAB = 97
WINDOW_LENGTHS = [20, 33]


def base_config(arch, model_type, **kw):
    c = {
        "architectures": [arch],
        "model_type": model_type,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    c.update(kw)
    return c


# name -> config; the architecture's extras follow from the config as in transformers.
VARIANTS = {
    "llama_gqa": base_config("LlamaForCausalLM", "llama"),
    # Rows of 256 and 512 values: whole blocks of ggml's K-quants (GGUF tests).
    "llama_k_blocks": base_config("LlamaForCausalLM", "llama", hidden_size=256, intermediate_size=512,
                                  max_position_embeddings=128),
    "llama_mha_tied": base_config("LlamaForCausalLM", "llama", num_key_value_heads=4, tie_word_embeddings=True),
    "llama_mqa_biases": base_config("LlamaForCausalLM", "llama", num_key_value_heads=1, attention_bias=True,
                                    mlp_bias=True),
    # Without grouped-query attention AWQ folds o's scales into v, and down's into up: biases included.
    "llama_mha_biases": base_config("LlamaForCausalLM", "llama", num_key_value_heads=4, attention_bias=True,
                                    mlp_bias=True),
    "llama3_rope": base_config("LlamaForCausalLM", "llama", rope_theta=500000.0,
                               rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "llama_linear_rope": base_config("LlamaForCausalLM", "llama", rope_scaling={"type": "linear", "factor": 2.0}),
    # max_position_embeddings below the longer window: dynamic NTK changes the base for it.
    "llama_dynamic_rope": base_config("LlamaForCausalLM", "llama", max_position_embeddings=24,
                                      rope_scaling={"rope_type": "dynamic", "factor": 2.0}),
    "llama_yarn_rope": base_config("LlamaForCausalLM", "llama",
                                   rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                                 "original_max_position_embeddings": 16}),
    # transformers 5.x layout: rope_theta inside rope_parameters, none at the top.
    "llama_rope_parameters": {k: v for k, v in base_config(
        "LlamaForCausalLM", "llama",
        rope_parameters={"rope_type": "yarn", "rope_theta": 5000.0, "factor": 2.0, "beta_fast": 16.0,
                         "original_max_position_embeddings": 32}).items() if k != "rope_theta"},
    "mistral_head_dim_window": base_config("MistralForCausalLM", "mistral", head_dim=16, sliding_window=8),
    # Qwen2's sliding_window is unused unless use_sliding_window is set.
    "qwen2_biases_tied": base_config("Qwen2ForCausalLM", "qwen2", num_key_value_heads=1, tie_word_embeddings=True,
                                     use_sliding_window=False, sliding_window=4, max_window_layers=2),
    "qwen3_qk_norm": base_config("Qwen3ForCausalLM", "qwen3", head_dim=16, attention_bias=False,
                                 use_sliding_window=False, sliding_window=None),
    "qwen3_yarn": base_config("Qwen3ForCausalLM", "qwen3", head_dim=8, num_key_value_heads=1,
                              rope_scaling={"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32}),
}


def head_dim(c):
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


def rope_params(c):
    """(rope_type, params, theta) from either config layout."""
    p = c.get("rope_parameters") or c.get("rope_scaling") or {}
    theta = p.get("rope_theta", c.get("rope_theta", 10000.0))
    return p.get("rope_type", p.get("type", "default")), p, theta


def inv_freq_and_scale(c, seq_len):
    """modeling_rope_utils.py: _compute_{default,linear_scaling,dynamic_ntk,yarn,llama3}_parameters."""
    kind, p, base = rope_params(c)
    dim = head_dim(c)
    exponents = np.arange(0, dim, 2, dtype=np.float64) / dim
    if kind == "default":
        return 1.0 / base ** exponents, 1.0
    if kind == "linear":
        return 1.0 / base ** exponents / p["factor"], 1.0
    if kind == "dynamic":
        max_pos = c["max_position_embeddings"]
        seq = max(seq_len, max_pos)
        base = base * ((p["factor"] * seq / max_pos) - (p["factor"] - 1)) ** (dim / (dim - 2))
        return 1.0 / base ** exponents, 1.0
    if kind == "llama3":
        inv = 1.0 / base ** exponents
        old = p["original_max_position_embeddings"]
        low_wl, high_wl = old / p["low_freq_factor"], old / p["high_freq_factor"]
        wl = 2 * math.pi / inv
        scaled = np.where(wl > low_wl, inv / p["factor"], inv)
        smooth = (old / wl - p["low_freq_factor"]) / (p["high_freq_factor"] - p["low_freq_factor"])
        smoothed = (1 - smooth) * scaled / p["factor"] + smooth * scaled
        medium = (wl >= high_wl) & (wl <= low_wl)
        return np.where(medium, smoothed, scaled), 1.0
    if kind == "yarn":
        factor = p["factor"]
        old = p.get("original_max_position_embeddings", c["max_position_embeddings"])
        scale = p.get("attention_factor") or (0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0)
        beta_fast, beta_slow = p.get("beta_fast") or 32, p.get("beta_slow") or 1

        def correction(rotations):
            return dim * math.log(old / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low, high = math.floor(correction(beta_fast)), math.ceil(correction(beta_slow))
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
        extrapolation = 1 - ramp
        pos_freqs = base ** exponents
        inv = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
        return inv, scale
    raise ValueError(kind)


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def silu(x):
    return x / (1 + np.exp(-x))


def linear(x, weights, name):
    y = x @ weights[name + ".weight"].T
    if name + ".bias" in weights:
        y = y + weights[name + ".bias"]
    return y


def forward(c, weights, ids):
    """Logits [len, vocab] of one window starting at position 0."""
    n = len(ids)
    heads, kv_heads, hd, eps = c["num_attention_heads"], c["num_key_value_heads"], head_dim(c), c["rms_norm_eps"]
    window = c.get("sliding_window") if c.get("use_sliding_window", True) else None
    inv, scale = inv_freq_and_scale(c, n)
    freqs = np.outer(np.arange(n, dtype=np.float64), inv)
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb)[:, None, :] * scale, np.sin(emb)[:, None, :] * scale
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    allowed = j <= i
    if window:
        allowed &= (i - j) < window
    h = weights["model.embed_tokens.weight"][ids]
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        x = rms_norm(h, weights[p + "input_layernorm.weight"], eps)
        q = linear(x, weights, p + "self_attn.q_proj").reshape(n, heads, hd)
        k = linear(x, weights, p + "self_attn.k_proj").reshape(n, kv_heads, hd)
        v = linear(x, weights, p + "self_attn.v_proj").reshape(n, kv_heads, hd)
        if p + "self_attn.q_norm.weight" in weights:
            q = rms_norm(q, weights[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, weights[p + "self_attn.k_norm.weight"], eps)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, heads // kv_heads, axis=1)
        v = np.repeat(v, heads // kv_heads, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
        scores = np.where(allowed[None], scores, -np.inf)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        attn = np.einsum("hts,shd->thd", scores, v).reshape(n, heads * hd)
        h = h + linear(attn, weights, p + "self_attn.o_proj")
        x = rms_norm(h, weights[p + "post_attention_layernorm.weight"], eps)
        mlp = silu(linear(x, weights, p + "mlp.gate_proj")) * linear(x, weights, p + "mlp.up_proj")
        h = h + linear(mlp, weights, p + "mlp.down_proj")
    h = rms_norm(h, weights["model.norm.weight"], eps)
    head = weights["model.embed_tokens.weight"] if c["tie_word_embeddings"] else weights["lm_head.weight"]
    return h @ head.T


def random_weights(c, rng):
    d, f, hd = c["hidden_size"], c["intermediate_size"], head_dim(c)
    q_dim, kv_dim = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    w = {"model.embed_tokens.weight": rng.normal(0, 1.0, (VOCAB, d)),
         "model.norm.weight": 1 + 0.1 * rng.normal(size=d)}
    if not c["tie_word_embeddings"]:
        w["lm_head.weight"] = rng.normal(0, 0.2, (VOCAB, d))
    qwen2 = c["model_type"] == "qwen2"
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes = {"self_attn.q_proj": (q_dim, d), "self_attn.k_proj": (kv_dim, d), "self_attn.v_proj": (kv_dim, d),
                  "self_attn.o_proj": (d, q_dim), "mlp.gate_proj": (f, d), "mlp.up_proj": (f, d),
                  "mlp.down_proj": (d, f)}
        for name, shape in shapes.items():
            w[p + name + ".weight"] = rng.normal(0, 1 / math.sqrt(shape[1]), shape)
            attention = name.startswith("self_attn")
            if (qwen2 and name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")) or \
                    (c.get("attention_bias") and attention) or (c.get("mlp_bias") and not attention):
                w[p + name + ".bias"] = rng.normal(0, 0.3, shape[0])
        w[p + "input_layernorm.weight"] = 1 + 0.1 * rng.normal(size=d)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.normal(size=d)
        if c["model_type"] == "qwen3":
            w[p + "self_attn.q_norm.weight"] = 1 + 0.2 * rng.normal(size=hd)
            w[p + "self_attn.k_norm.weight"] = 1 + 0.2 * rng.normal(size=hd)
    return {k: v.astype(np.float32) for k, v in w.items()}


def write_safetensors(path, tensors):
    """The safetensors layout: u64 header length, JSON header, then the data in header order."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--variant")
    parser.add_argument("--vocab", type=int)
    args = parser.parse_args()
    out = args.out
    rng = np.random.default_rng(20261201)
    if args.variant:
        global VOCAB
        VOCAB = args.vocab or VOCAB
        config = dict(VARIANTS[args.variant], vocab_size=VOCAB)
        os.makedirs(out, exist_ok=True)
        write_safetensors(os.path.join(out, "model.safetensors"), random_weights(config, rng))
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(config, f, indent=1)
        return
    for name, config in VARIANTS.items():
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        weights = random_weights(config, rng)
        write_safetensors(os.path.join(folder, "model.safetensors"), weights)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(config, f, indent=1)
        windows = [rng.integers(0, VOCAB, n).tolist() for n in WINDOW_LENGTHS]
        with open(os.path.join(folder, "windows.json"), "w") as f:
            json.dump(windows, f)
        weights64 = {k: v.astype(np.float64) for k, v in weights.items()}
        logits = np.concatenate([forward(config, weights64, np.array(w)) for w in windows])
        logits.astype("<f4").tofile(os.path.join(folder, "logits.f32"))
    with open(os.path.join(out, "variants.json"), "w") as f:
        json.dump(sorted(VARIANTS), f)


if __name__ == "__main__":
    main()
