// llama.cpp (through node-llama-cpp, CPU only) on GGUF files, for tests/llamacpp_client_test.cpp.
//   node tools/llamacpp/check_gguf.mjs < request.json > result.json
// request: {"runs": [{"model": PATH, "strings": [STR...], "prompt": STR, "prompt_tokens": [BOS, ...],
//           "n_predict": N, "score_tokens": [BOS, ...]}, ...]}
// result:  {"node_llama_cpp": VERSION, "llama_cpp_release": TAG, "runs": [{...per run, below}]}
// One process for every run: starting node-llama-cpp costs more than running these small models.
// Threads are pinned to 1: on a loaded machine llama.cpp's spinning worker threads made decoding
// ~100x slower (17 s per token seen with the default thread count).
import {readFileSync} from "node:fs";
import {getLlama, LlamaCompletion} from "node-llama-cpp";

const request = JSON.parse(readFileSync(0, "utf8"));
const llama = await getLlama({gpu: false, logLevel: "error", maxThreads: 1, build: "never"});
const pkg = JSON.parse(readFileSync(new URL("./node_modules/node-llama-cpp/package.json", import.meta.url), "utf8"));

async function run(req) {
  const model = await llama.loadModel({modelPath: req.model});
  // F32 KV cache: llama.cpp's default F16 cache rounds K and V, which alone moves log-probs ~1e-3.
  const context = await model.createContext({
    contextSize: 512, sequences: 3, threads: 1,
    experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
  });
  const out = {bos: model.tokens.bos, eos: model.tokens.eos, prepends_bos: model.tokens.shouldPrependBosToken};

  // Tokenisation without special tokens (llama_tokenize with add_special = false), as
  // llmprune's Tokenizer::encode.
  out.tokens = req.strings.map((s) => Array.from(model.tokenize(s)));
  // What LlamaCompletion.generateCompletion(STRING) feeds after BOS: the prompt tokenised with
  // "trimLeadingSpace", i.e. without SentencePiece's dummy-prefix space on the first word.
  out.string_prompt_tokens = Array.from(model.tokenize(req.prompt, false, "trimLeadingSpace"));

  // Greedy decoding by hand: llmprune's prompt tokens (BOS included), temperature 0.
  {
    const seq = context.getSequence();
    const got = [];
    for await (const t of seq.evaluate(req.prompt_tokens, {temperature: 0})) {
      got.push(t);
      if (got.length >= req.n_predict) break;
    }
    out.greedy_evaluate = got;
  }

  // LlamaCompletion given the prompt as tokens (it prepends BOS itself), greedy, no repeat penalty.
  {
    const completion = new LlamaCompletion({contextSequence: context.getSequence()});
    const body = req.prompt_tokens[0] === model.tokens.bos ? req.prompt_tokens.slice(1) : req.prompt_tokens;
    const got = [];
    out.completion_text = await completion.generateCompletion(body, {
      temperature: 0, repeatPenalty: false, maxTokens: req.n_predict, onToken: (t) => got.push(...t),
    });
    out.greedy_completion = got;
  }

  // log P(score_tokens[i+1] | score_tokens[..i]) from the full next-token distribution at each
  // position (temperature 1, no top-k / top-p / min-p truncation).
  {
    const toks = req.score_tokens;
    const next = {probabilities: true, options: {temperature: 1, topK: 0, topP: 1, minP: 0}};
    const res = await context.getSequence().controlledEvaluate(toks.slice(0, -1).map((t) => [t, {generateNext: next}]));
    out.logprobs = [];
    out.max_prob_sum_error = 0;
    for (let i = 0; i + 1 < toks.length; i++) {
      const p = res[i].next.probabilities;
      out.logprobs.push(Math.log(p.get(toks[i + 1]) ?? 0));
      let s = 0;
      for (const v of p.values()) s += v;
      out.max_prob_sum_error = Math.max(out.max_prob_sum_error, Math.abs(s - 1));
    }
    out.distribution_size = res[0].next.probabilities.size;
  }
  await context.dispose();
  await model.dispose();
  return out;
}

const runs = [];
for (const req of request.runs) runs.push(await run(req));
process.stdout.write(JSON.stringify({node_llama_cpp: pkg.version, llama_cpp_release: llama.llamaCppRelease.release, runs}) + "\n");
process.exit(0);
