// `make gguf-quality`: GGUF files by lowbit's rtn, gptq and awq on each ggml type, beside llama.cpp's own
// quantizer (ggml_quantize_chunk from node-llama-cpp's libggml-base.so, without an imatrix and with the
// imatrix.gguf lowbit's gptq job wrote), all measured by llama.cpp itself (node-llama-cpp, CPU): mean KL of
// its next-token distributions to the F32 file over WikiText-2 windows, and bits per weight of the
// quantized linear layers. Two models: stories260K (a real Llama; its 64-wide rows take the 32-value
// types) and a random Llama with 256/512-wide rows for the K-quants (tests/reference/hf_reference.py).
// GPTQ and AWQ calibrate on tiny-shakespeare (stories260K) or WikiText-2 ids (the random model).
// "lowbit rtn + calibration" weighs rtn's block search by the calibration inputs' second moments, as
// llama-quantize does with an imatrix. Usage: node gguf_quality.mjs BUILD_DIR
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { distributions, meanKl, openLlama } from '../tests/e2e/llamacpp.mjs';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const build = process.argv[2];
const lowbit = path.join(build, 'lowbit');
const ggmlQuantize = path.join(build, 'tests', 'lowbit_llamacpp_quantize');
const modules = path.join(root, 'tools', 'node_modules');
const libggml = path.join(modules, '@node-llama-cpp', 'linux-x64', 'bins', 'linux-x64', 'libggml-base.so');
const data = path.join(root, '..', 'shared', 'data');
const tokenizer = path.join(data, 'models', 'stories260K', 'tok512.bin');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-gguf-quality-'));

const llama = await openLlama(modules);
const wiki = path.join(work, 'wiki.txt');
fs.writeFileSync(wiki, fs.readFileSync(path.join(data, 'text', 'wikitext2-test.raw'), 'utf8').slice(0, 20000));
const ids = JSON.parse(execFileSync(lowbit, ['tokenize', '--tokenizer', tokenizer, '--vocab-size', '512', '--text', wiki, '--json'],
                                    { encoding: 'utf8' }));
const windows = [];
for (let i = 0; i + 128 <= ids.length && windows.length < 16; i += 128) windows.push(ids.slice(i, i + 128));
const calibIds = path.join(work, 'calib.ids.json');  // the windows after the evaluated ones
fs.writeFileSync(calibIds, JSON.stringify(ids.slice(16 * 128, 16 * 128 + 24 * 64)));
console.log(`llama.cpp (node-llama-cpp, CPU) on ${windows.length} windows of 128 WikiText-2 tokens; KL to the F32 file, nats/token`);

async function table(slug, title, model, calib, types) {
  const quantize = (name, args) => {
    const out = path.join(work, name);
    const report = JSON.parse(execFileSync(lowbit, ['quantize', '--input', model, '--tokenizer', tokenizer, '--output', out,
                                                    '--format', 'gguf', '--json', ...args], { encoding: 'utf8' }));
    return { file: path.join(out, 'model.gguf'), dir: out, report };
  };
  const f32 = quantize(`${slug}-f32`, ['--gguf-type', 'F32']);
  const base = await distributions(llama, f32.file, windows);
  console.log(`\n${title}\n`);
  console.log('| type | quantizer | bits/weight (quantized layers) | mean KL | vs llama.cpp |');
  console.log('|---|---|---|---|---|');
  for (const type of types) {
    const rows = [];
    const gptq = quantize(`${slug}-${type}-gptq`, ['--gguf-type', type, '--method', 'gptq', '--imatrix', ...calib]);
    const kl = async (file) => meanKl(base, await distributions(llama, file, windows)).kl;
    const ggml = async (name, ...imatrix) => {
      const file = path.join(work, `${slug}-${type}-${name}.gguf`);
      execFileSync(ggmlQuantize, [libggml, gptq.file, f32.file, file, ...imatrix]);
      return kl(file);
    };
    const bits = gptq.report.summary.bits_per_weight.toFixed(3);
    const plain = await ggml('llamacpp');
    rows.push(['llama.cpp', bits, plain]);
    rows.push(['llama.cpp + lowbit imatrix', bits, await ggml('llamacpp-imatrix', path.join(gptq.dir, 'imatrix.gguf'))]);
    const rtn = quantize(`${slug}-${type}-rtn`, ['--gguf-type', type, '--method', 'rtn']);
    rows.push(['lowbit rtn', rtn.report.summary.bits_per_weight.toFixed(3), await kl(rtn.file)]);
    const weighted = quantize(`${slug}-${type}-rtn-calib`, ['--gguf-type', type, '--method', 'rtn', ...calib]);
    rows.push(['lowbit rtn + calibration', weighted.report.summary.bits_per_weight.toFixed(3), await kl(weighted.file)]);
    rows.push(['lowbit gptq', bits, await kl(gptq.file)]);
    const awq = quantize(`${slug}-${type}-awq`, ['--gguf-type', type, '--method', 'awq', ...calib]);
    rows.push(['lowbit awq', awq.report.summary.bits_per_weight.toFixed(3), await kl(awq.file)]);
    for (const [who, b, value] of rows) console.log(`| ${type} | ${who} | ${b} | ${value.toFixed(4)} | ${(value / plain).toFixed(2)}x |`);
  }
}

await table('stories', 'stories260K (down_proj, 172 wide, stays F16)', path.join(data, 'models', 'stories260K', 'stories260K.bin'),
            ['--calib', path.join(data, 'text', 'tiny-shakespeare.txt'), '--calib-samples', '32', '--calib-seqlen', '128'],
            ['Q4_0', 'Q4_1', 'IQ4_NL', 'Q5_0', 'Q5_1', 'Q8_0']);
const synth = path.join(work, 'synth');
execFileSync('/usr/bin/python3', [path.join(root, 'tests', 'reference', 'hf_reference.py'), '--variant', 'llama_k_blocks',
                                  '--vocab', '512', synth]);
await table('random', 'random Llama, 2 blocks of 256 x 512 (K-quants)', synth,
            ['--calib', calibIds, '--calib-samples', '24', '--calib-seqlen', '64'],
            ['Q2_K', 'Q3_K', 'Q4_K', 'IQ4_XS', 'Q5_K', 'Q6_K', 'Q4_K_M']);
fs.rmSync(work, { recursive: true, force: true });
