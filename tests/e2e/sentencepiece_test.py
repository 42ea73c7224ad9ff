#!/usr/bin/python3
"""A SentencePiece tokenizer.model through lowbit against SentencePiece's own spm_encode.

BPE and unigram models with byte fallback are trained on tiny-shakespeare with spm_train (Debian's
sentencepiece); every line of WikiText-2's test split and a few hard strings must get the ids spm_encode
gives them. lowbit runs libsentencepiece in a module of its own beside gRPC's protobuf
(core/runtime/sentencepiece_module.h), which this also exercises.
Usage: sentencepiece_test.py LOWBIT SHARED_DATA
"""
import json
import os
import subprocess
import sys
import tempfile

lowbit, data = sys.argv[1], sys.argv[2]
failed = False
with tempfile.TemporaryDirectory() as tmp:
    with open(os.path.join(data, "text", "wikitext2-test.raw"), encoding="utf-8") as f:
        lines = [l for l in f.read().split("\n") if l.strip()]
    lines += ["  two  spaces", "日本語 and emoji 👍🏽", "digits 1234567", "tab\tseparated", "<s> and </s> as text"]
    corpus = os.path.join(tmp, "lines.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    jsonl = os.path.join(tmp, "lines.jsonl")
    with open(jsonl, "w", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(l) for l in lines) + "\n")
    for model_type in ("bpe", "unigram"):
        prefix = os.path.join(tmp, model_type)
        subprocess.run(["spm_train", "--input", os.path.join(data, "text", "tiny-shakespeare.txt"), "--model_prefix",
                        prefix, "--vocab_size", "400", "--model_type", model_type, "--byte_fallback", "true",
                        "--minloglevel", "2"], check=True, capture_output=True)
        want = [l.split() for l in subprocess.run(["spm_encode", "--model", prefix + ".model", "--output_format", "id",
                                                   "--input", corpus], check=True, capture_output=True,
                                                  text=True).stdout.splitlines()]
        out = subprocess.run([lowbit, "tokenize", "--tokenizer", prefix + ".model", "--text", jsonl, "--jsonl", "--json"],
                             check=True, capture_output=True, text=True).stdout.splitlines()
        got = [[str(i) for i in json.loads(l)] for l in out]
        agree = sum(1 for g, w in zip(got, want) if g == w)
        print("tokenizer.model (%s): %d/%d lines give spm_encode's ids" % (model_type, agree, len(lines)))
        if len(got) != len(lines) or agree != len(lines):
            failed = True
            for g, w, l in zip(got, want, lines):
                if g != w:
                    print("  differs:", l[:60], g[:10], w[:10])
                    break
print("FAILED" if failed else "PASSED")
sys.exit(1 if failed else 0)
