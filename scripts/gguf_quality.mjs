// `make gguf-quality`: stories260K written as GGUF by lowbit's rtn, gptq and awq on each legacy ggml type,
// measured by llama.cpp itself (node-llama-cpp, CPU): mean KL of its next-token distributions to the F32
// GGUF over WikiText-2 windows, and bits per weight of the quantized linear layers. GPTQ and AWQ calibrate
// on tiny-shakespeare (32 windows of 128 tokens). Usage: node gguf_quality.mjs BUILD_DIR
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { distributions, meanKl, openLlama } from '../tests/e2e/llamacpp.mjs';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const lowbit = path.join(process.argv[2], 'lowbit');
const data = path.join(root, '..', 'shared', 'data');
const model = path.join(data, 'models', 'stories260K', 'stories260K.bin');
const tokenizer = path.join(data, 'models', 'stories260K', 'tok512.bin');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-gguf-quality-'));
const calib = ['--calib', path.join(data, 'text', 'tiny-shakespeare.txt'), '--calib-samples', '32', '--calib-seqlen', '128'];

function quantize(name, args) {
  const out = path.join(work, name);
  const report = JSON.parse(execFileSync(lowbit, ['quantize', '--input', model, '--tokenizer', tokenizer, '--output', out,
                                                  '--format', 'gguf', '--json', ...args], { encoding: 'utf8' }));
  return { file: path.join(out, 'model.gguf'), report };
}

const llama = await openLlama(path.join(root, 'tools', 'node_modules'));
const wiki = path.join(work, 'wiki.txt');
fs.writeFileSync(wiki, fs.readFileSync(path.join(data, 'text', 'wikitext2-test.raw'), 'utf8').slice(0, 12000));
const ids = JSON.parse(execFileSync(lowbit, ['tokenize', '--tokenizer', tokenizer, '--vocab-size', '512', '--text', wiki, '--json'],
                                    { encoding: 'utf8' }));
const windows = [];
for (let i = 0; i + 128 <= ids.length && windows.length < 16; i += 128) windows.push(ids.slice(i, i + 128));
const base = await distributions(llama, quantize('f32', ['--gguf-type', 'F32']).file, windows);
let tokens = 0;
console.log(`llama.cpp (node-llama-cpp, CPU) on ${windows.length} windows of 128 WikiText-2 tokens\n`);
console.log('| type | method | bits/weight (quantized layers) | mean KL to F32 (nats/token) | vs rtn |');
console.log('|---|---|---|---|---|');
for (const type of ['Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q8_0']) {
  let rtn = 0;
  for (const [method, extra] of [['rtn', []], ['gptq', calib], ['awq', calib]]) {
    const q = quantize(`${type}-${method}`, ['--gguf-type', type, '--method', method, ...extra]);
    const measured = meanKl(base, await distributions(llama, q.file, windows));
    const kl = measured.kl;
    tokens = measured.tokens;
    if (method === 'rtn') rtn = kl;
    console.log(`| ${type} | ${method} | ${q.report.summary.bits_per_weight.toFixed(3)} | ${kl.toFixed(4)} | ${(kl / rtn).toFixed(2)}x |`);
  }
}
console.log(`\n${tokens} tokens per row; ffn_down (172 wide) stays F16 in every file.`);
fs.rmSync(work, { recursive: true, force: true });
