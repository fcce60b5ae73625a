#include "train/data.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "train/lora.h"

namespace llmprune {

namespace {

const char* kPromptInput =
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";
const char* kPromptNoInput =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n";

std::string json_type(const nlohmann::json& j) { return j.type_name(); }

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

bool blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

struct BadRecord {
  std::string what;
};

// Extracts (instruction, input, output) or throws BadRecord.
void read_fields(const nlohmann::json& rec, std::string* instruction, std::string* input, std::string* output) {
  if (!rec.is_object()) throw BadRecord{"not a JSON object (" + json_type(rec) + ")"};
  auto str_field = [&](const char* name, bool required, std::string* dst) {
    auto it = rec.find(name);
    if (it == rec.end() || it->is_null()) {
      if (required) throw BadRecord{std::string("'") + name + "' is missing"};
      dst->clear();
      return;
    }
    if (!it->is_string()) throw BadRecord{std::string("'") + name + "' is not a string (" + json_type(*it) + ")"};
    *dst = it->get<std::string>();
  };
  str_field("instruction", true, instruction);
  str_field("input", false, input);
  str_field("output", true, output);
  if (blank(*instruction)) throw BadRecord{"'instruction' is empty"};
}

}  // namespace

int64_t Example::scored() const {
  int64_t n = 0;
  for (size_t i = 1; i < labels.size(); i++) n += labels[i] >= 0;
  return n;
}

std::string alpaca_prompt(const std::string& instruction, const std::string& input) {
  // alpaca-lora's Prompter (str.format): an empty input selects the no-input template. One pass
  // over the template, so braces inside the fields are never taken for placeholders.
  const std::string tpl = input.empty() ? kPromptNoInput : kPromptInput;
  std::string out;
  for (size_t i = 0; i < tpl.size();) {
    if (tpl.compare(i, 13, "{instruction}") == 0) {
      out += instruction;
      i += 13;
    } else if (tpl.compare(i, 7, "{input}") == 0) {
      out += input;
      i += 7;
    } else {
      out += tpl[i++];
    }
  }
  return out;
}

std::vector<Example> load_examples(const std::string& file, const Tokenizer& tok, const DataOptions& opt, DataReport* report) {
  DataReport local;
  DataReport& rep = report ? *report : local;
  rep = DataReport{};
  if (opt.cutoff_len < 2) throw UserError("--cutoff-len must be at least 2");
  std::string fmt = opt.format;
  if (fmt == "auto") fmt = (ends_with(file, ".json") || ends_with(file, ".jsonl")) ? "alpaca" : "text";
  if (fmt != "alpaca" && fmt != "text") throw UserError("--data-format must be auto, alpaca or text");
  rep.format = fmt;
  std::string content = read_text_file(file);
  std::vector<Example> out;
  const int32_t eos = tok.eos_id();
  const size_t cutoff = size_t(opt.cutoff_len);

  if (fmt == "text") {
    if (blank(content)) throw input_error(file, "file is empty");
    std::vector<int32_t> ids;
    ids = tok.prefix_ids();
    auto body = tok.encode(content);
    ids.insert(ids.end(), body.begin(), body.end());
    for (size_t s = 0; s < ids.size(); s += cutoff) {
      size_t e = std::min(ids.size(), s + cutoff);
      if (e - s < 2) break;
      Example ex;
      ex.ids.assign(ids.begin() + int64_t(s), ids.begin() + int64_t(e));
      ex.labels = ex.ids;
      out.push_back(std::move(ex));
      rep.records++;
    }
    if (out.empty()) throw input_error(file, "fewer than 2 tokens of text");
    return out;
  }

  // ---- Alpaca ----
  std::vector<std::pair<nlohmann::json, std::string>> records;  // record, parse error (if any)
  std::vector<int64_t> line_of;                                  // JSON lines: 1-based line numbers
  size_t first = content.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) throw input_error(file, "file is empty");
  if (content[first] == '[') {
    nlohmann::json all;
    try {
      all = nlohmann::json::parse(content);
    } catch (const nlohmann::json::exception& e) {
      throw input_error(file, std::string("invalid JSON: ") + e.what());
    }
    if (!all.is_array()) throw input_error(file, "expected a JSON array of records");
    for (auto& r : all) records.emplace_back(std::move(r), "");
  } else {
    size_t pos = 0;
    int64_t line = 0;
    while (pos < content.size()) {
      size_t nl = content.find('\n', pos);
      std::string text = content.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      pos = nl == std::string::npos ? content.size() : nl + 1;
      line++;
      if (blank(text)) continue;
      line_of.push_back(line);
      try {
        records.emplace_back(nlohmann::json::parse(text), "");
      } catch (const nlohmann::json::exception& e) {
        std::string msg = e.what();
        records.emplace_back(nlohmann::json(), "invalid JSON: " + msg);
      }
    }
  }
  if (records.empty()) throw input_error(file, "no records");

  auto where = [&](size_t i) {
    std::string w = file + ": record " + std::to_string(i);
    if (i < line_of.size()) w += " (line " + std::to_string(line_of[i]) + ")";
    return w;
  };
  auto encode = [&](const std::string& text) {
    std::vector<int32_t> ids = tok.prefix_ids();
    auto body = tok.encode(text);
    ids.insert(ids.end(), body.begin(), body.end());
    return ids;
  };
  for (size_t i = 0; i < records.size(); i++) {
    rep.records++;
    std::string instruction, input, output;
    try {
      if (!records[i].second.empty()) throw BadRecord{records[i].second};
      read_fields(records[i].first, &instruction, &input, &output);
    } catch (const BadRecord& bad) {
      if (opt.strict) throw UserError(where(i) + ": " + bad.what);
      rep.skipped_bad++;
      if (rep.problems.size() < 20) rep.problems.push_back(where(i) + ": " + bad.what);
      continue;
    }
    std::string user = alpaca_prompt(instruction, input);
    Example ex;
    // A family that ends prompts with tokens of its own (ChatGLM-6B v1: [gMASK] <sop>) gets them
    // between the prompt and the response, as LLM-Pruner's ChatGLM data does.
    std::vector<int32_t> framed_user;
    if (!tok.suffix_ids().empty()) {
      framed_user = tok.prompt_ids(tok.encode(user));
      ex.ids = framed_user;
      auto reply = tok.encode(output);
      ex.ids.insert(ex.ids.end(), reply.begin(), reply.end());
    } else {
      ex.ids = encode(user + output);
    }
    if (ex.ids.size() > cutoff) {
      ex.ids.resize(cutoff);
      rep.truncated++;
    }
    if (opt.add_eos && eos >= 0 && ex.ids.size() < cutoff && ex.ids.back() != eos) ex.ids.push_back(eos);
    ex.labels = ex.ids;
    if (!opt.train_on_inputs) {
      size_t user_len = std::min(framed_user.empty() ? encode(user).size() : framed_user.size(), cutoff);
      for (size_t t = 0; t < std::min(user_len, ex.labels.size()); t++) ex.labels[t] = -1;
    }
    if (ex.scored() == 0) {
      rep.skipped_no_target++;
      continue;
    }
    out.push_back(std::move(ex));
  }
  if (out.empty())
    throw input_error(file, "no usable record (" + std::to_string(rep.skipped_bad) + " malformed, " +
                                std::to_string(rep.skipped_no_target) + " with no response token within --cutoff-len)" +
                                (rep.problems.empty() ? "" : "; first: " + rep.problems.front()));
  return out;
}

uint64_t examples_digest(const std::vector<Example>& ex) {
  uint64_t h = splitmix64(ex.size());
  for (const Example& e : ex) {
    h = mix_keys(h, e.ids.size());
    for (size_t i = 0; i < e.ids.size(); i++) h = mix_keys(h, (uint64_t(uint32_t(e.ids[i])) << 32) | uint32_t(e.labels[i]));
  }
  return h;
}

}  // namespace llmprune
