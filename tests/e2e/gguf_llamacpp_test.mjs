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
import { pathToFileURL } from 'node:url';

import { distributions, meanKl, openLlama } from './llamacpp.mjs';

const [lowbit, data, modules] = process.argv.slice(2);
const { gguf } = await import(pathToFileURL(path.join(modules, '@huggingface', 'gguf', 'dist', 'index.mjs')));

const model = path.join(data, 'models', 'stories260K', 'stories260K.bin');
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
for (const [type, bound] of [['Q8_0', 0.01], ['Q5_0', 0.1], ['Q5_1', 0.1], ['Q4_0', 0.3], ['Q4_1', 0.3]]) {
  const q = quantize(type.toLowerCase(), '--gguf-type', type, '--method', 'rtn');
  const { kl, tokens: n } = meanKl(base, await distributions(llama, q.file, windows));
  const layers = q.report.layers.length;
  check(layers === 30 && kl > 0 && kl < bound,
        `${type}: llama.cpp loads it (${layers} linear layers quantized, ${q.report.summary.bits_per_weight.toFixed(3)} bits/weight); ` +
        `mean KL to the F32 file ${kl.toExponential(3)} over ${n} tokens`);
}

fs.rmSync(work, { recursive: true, force: true });
console.log(failures ? `${failures} check(s) failed` : 'PASSED');
process.exit(failures ? 1 : 0);
