// llama.cpp through node-llama-cpp's prebuilt CPU binaries, for the GGUF test and `make gguf-quality`:
// next-token distributions of a GGUF file over token windows, and their mean KL.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

export async function openLlama(modules) {
  const { getLlama } = await import(pathToFileURL(path.join(modules, 'node-llama-cpp', 'dist', 'index.js')));
  return getLlama({ gpu: false, build: 'never', logLevel: 'error' });
}

// For each window, the distribution after BOS and each of its tokens but the last (a Map token -> p).
export async function distributions(llama, file, windows) {
  const model = await llama.loadModel({ modelPath: file });
  const context = await model.createContext({ contextSize: 256 });
  const sequence = context.getSequence();
  const out = [];
  for (const w of windows) {
    await sequence.clearHistory();
    const input = [model.tokens.bos, ...w.slice(0, -1)].map((t) => [t, { generateNext: { probabilities: true } }]);
    out.push((await sequence.controlledEvaluate(input)).map((r) => r.next.probabilities));
  }
  await context.dispose();
  await model.dispose();
  return out;
}

// Mean KL(reference || got) per predicted token, and the token count.
export function meanKl(reference, got) {
  let kl = 0, tokens = 0;
  for (let w = 0; w < reference.length; ++w) {
    for (let t = 0; t < reference[w].length; ++t, ++tokens) {
      for (const [token, p] of reference[w][t]) if (p > 0) kl += p * Math.log(p / Math.max(got[w][t].get(token) ?? 0, 1e-12));
    }
  }
  return { kl: kl / tokens, tokens };
}
