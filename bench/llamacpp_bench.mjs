// llama.cpp's prompt and decode speed on a GGUF file, through node-llama-cpp (its bundled
// prebuilt CPU llama.cpp), measured the way bench_forward measures llmprune: a prompt of
// --prompt tokens evaluated in one batch from an empty context (best of --reps), and --decode
// tokens generated greedily one at a time after a 1-token prompt (the time from the first
// sampled token to the last). Prints one JSON line.
//
//   NODE_PATH=DIR/node_modules node bench/llamacpp_bench.mjs MODEL.gguf [--threads 2] [--prompt 128]
//       [--decode 32] [--reps 2] [--node-modules DIR/node_modules]
//
// node-llama-cpp@3.21.1 is found through --node-modules (or the NODE_LLAMA_CPP_MODULES
// environment variable; default tools/llamacpp/node_modules), the directory `npm ci` fills.
import {createRequire} from "node:module";
import path from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

function parseArgs(argv) {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const opt = {
    model: null, threads: 2, prompt: 128, decode: 32, reps: 2,
    modules: process.env.NODE_LLAMA_CPP_MODULES || path.join(here, "..", "tools", "llamacpp", "node_modules"),
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i], next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--threads") opt.threads = parseInt(next(), 10);
    else if (a === "--prompt") opt.prompt = parseInt(next(), 10);
    else if (a === "--decode") opt.decode = parseInt(next(), 10);
    else if (a === "--reps") opt.reps = parseInt(next(), 10);
    else if (a === "--node-modules") opt.modules = next();
    else if (a.startsWith("--")) throw new Error(`unknown option ${a}`);
    else opt.model = a;
  }
  if (!opt.model) throw new Error("usage: llamacpp_bench.mjs MODEL.gguf [--threads N] [--prompt N] [--decode N] [--reps N] [--node-modules DIR]");
  return opt;
}

async function importNodeLlamaCpp(modulesDir) {
  // Resolve the package from the given node_modules, not from this file's location.
  const require = createRequire(path.join(path.resolve(modulesDir), "..", "package.json"));
  let entry;
  try {
    entry = require.resolve("node-llama-cpp");
  } catch {
    throw new Error(`node-llama-cpp not found under ${modulesDir} (npm ci in tools/llamacpp, or pass --node-modules)`);
  }
  return import(pathToFileURL(entry).href);
}

const opt = parseArgs(process.argv.slice(2));
const {getLlama} = await importNodeLlamaCpp(opt.modules);
const now = () => Number(process.hrtime.bigint()) / 1e9;

// build "never": use the bundled prebuilt binary, never compile llama.cpp from source.
const llama = await getLlama({gpu: false, build: "never", logLevel: "error", maxThreads: opt.threads});
const model = await llama.loadModel({modelPath: opt.model, gpuLayers: 0});
const meta = model.fileInfo.metadata;
const nVocab = meta?.tokenizer?.ggml?.tokens?.length ?? meta?.llama?.vocab_size;
if (!nVocab) throw new Error(`${opt.model}: no tokenizer.ggml.tokens or llama.vocab_size in the metadata`);
const ctxSize = Math.max(opt.prompt, opt.decode + 1) + 16;
const context = await model.createContext({contextSize: ctxSize, batchSize: Math.max(opt.prompt, 1), threads: opt.threads});
const sequence = context.getSequence();

// The same token ids bench_forward uses: (i * 7919 + 13) mod vocab.
const promptTokens = Array.from({length: opt.prompt}, (_, i) => (i * 7919 + 13) % nVocab);

let promptBest = Infinity;
for (let r = 0; r < Math.max(1, opt.reps) + 1; r++) {  // first run: warm-up (page-in)
  await sequence.clearHistory();
  const t0 = now();
  await sequence.evaluateWithoutGeneratingNewTokens(promptTokens);
  const dt = now() - t0;
  if (r > 0) promptBest = Math.min(promptBest, dt);
}

let decodeBest = Infinity;
for (let r = 0; r < Math.max(1, opt.reps); r++) {
  await sequence.clearHistory();
  let n = 0, tFirst = 0, tLast = 0;
  // Greedy; the first yielded token ends the 1-token prompt, the next `decode` are timed.
  for await (const _tok of sequence.evaluate([promptTokens[0]], {temperature: 0})) {
    const t = now();
    if (n === 0) tFirst = t;
    tLast = t;
    if (++n > opt.decode) break;
  }
  decodeBest = Math.min(decodeBest, (tLast - tFirst) / (n - 1));
}

console.log(JSON.stringify({
  tool: "llama.cpp (node-llama-cpp)",
  ggml_release: llama.llamaCppRelease?.release ?? null,
  build: llama.buildType ?? null,
  model: opt.model,
  threads: opt.threads,
  prompt_tokens: opt.prompt,
  prompt_tok_s: opt.prompt / promptBest,
  decode_tokens: opt.decode,
  decode_tok_s: 1 / decodeBest,
}));
await context.dispose();
await model.dispose();
await llama.dispose();
