#include "eval/tasks.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace llmprune {
namespace fs = std::filesystem;
using nlohmann::json;

// ------------------------------------------------------------------ Python string semantics
namespace {

// Decodes the code point starting at s[i]; sets len. Invalid bytes count as one code point.
uint32_t decode_utf8(const std::string& s, size_t i, size_t& len) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  if (i + size_t(n) > s.size()) n = 1;
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k < n; k++) {
    unsigned char d = static_cast<unsigned char>(s[i + size_t(k)]);
    if ((d & 0xC0) != 0x80) {  // malformed: take the lead byte alone
      len = 1;
      return c;
    }
    cp = (cp << 6) | (d & 0x3F);
  }
  len = size_t(n);
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

// Python's str.isspace() set.
bool py_isspace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// ASCII and Latin-1 (U+00C0..U+00DE <-> U+00E0..U+00FE, except the multiplication/division signs).
uint32_t to_upper(uint32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 32;
  return c;
}
uint32_t to_lower(uint32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
  return c;
}

std::string strip_impl(const std::string& s, bool left) {
  size_t begin = 0, end = 0;  // end: byte just past the last non-space code point
  bool seen = false;
  for (size_t i = 0; i < s.size();) {
    size_t len;
    uint32_t cp = decode_utf8(s, i, len);
    if (!py_isspace(cp)) {
      if (!seen) begin = i;
      seen = true;
      end = i + len;
    }
    i += len;
  }
  if (!seen) return "";
  return left ? s.substr(begin, end - begin) : s.substr(0, end);
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  // Non-overlapping, left to right, one pass (Python's str.replace).
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out += to;
  }
  out.append(s, pos, std::string::npos);
  s.swap(out);
}

}  // namespace

std::string py_strip(const std::string& s) { return strip_impl(s, true); }
std::string py_rstrip(const std::string& s) { return strip_impl(s, false); }

std::string py_capitalize(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  bool first = true;
  for (size_t i = 0; i < s.size();) {
    size_t len;
    uint32_t cp = decode_utf8(s, i, len);
    if (len == 1 && cp >= 0x80) {
      out.push_back(s[i]);  // malformed byte: keep as is
    } else {
      append_utf8(out, first ? to_upper(cp) : to_lower(cp));
    }
    first = false;
    i += len;
  }
  return out;
}

size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string hellaswag_preprocess(const std::string& in) {
  std::string s = py_strip(in);
  replace_all(s, " [title]", ". ");
  // re.sub(r"\[.*?\]", "", s): '.' stops at newlines, so a '[' whose next ']' comes after a
  // newline (or never) stays.
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s[i] == '[') {
      size_t j = s.find_first_of("]\n", i + 1);
      if (j != std::string::npos && s[j] == ']') {
        i = j + 1;
        continue;
      }
    }
    out.push_back(s[i++]);
  }
  replace_all(out, "  ", " ");
  return out;
}

// ------------------------------------------------------------------ file reading
namespace {

struct Line {
  int number;  // 1-based line number in the file
  std::string text;
};

std::string where(const fs::path& file, int line) { return file.string() + ":" + std::to_string(line); }

[[noreturn]] void fail(const fs::path& file, int line, const std::string& what) {
  throw UserError(where(file, line) + ": " + what);
}

void require_file(const fs::path& p) {
  if (!fs::is_regular_file(p)) throw UserError("task file " + p.string() + " not found");
}

// Non-blank lines ('\r' of CRLF files removed). An empty file is an error.
std::vector<Line> read_lines(const fs::path& file) {
  require_file(file);
  std::ifstream in(file, std::ios::binary);
  if (!in) throw input_error(file.string(), "cannot open");
  std::vector<Line> out;
  std::string s;
  int n = 0;
  while (std::getline(in, s)) {
    n++;
    if (!s.empty() && s.back() == '\r') s.pop_back();
    if (n == 1 && s.rfind("\xEF\xBB\xBF", 0) == 0) s.erase(0, 3);  // UTF-8 BOM
    if (py_strip(s).empty()) continue;
    out.push_back({n, s});
  }
  if (out.empty()) fail(file, 1, "file is empty (no items)");
  return out;
}

// A parsed jsonl object with typed, located field access.
struct Rec {
  fs::path file;
  int line;
  json j;

  [[noreturn]] void bad(const std::string& what) const { fail(file, line, what); }
  const json& get(const json& obj, const std::string& key, const std::string& path) const {
    if (!obj.is_object()) bad("\"" + path + "\" is not an object");
    auto it = obj.find(key);
    if (it == obj.end()) bad("missing field \"" + (path.empty() ? key : path + "." + key) + "\"");
    return *it;
  }
  const json& field(const std::string& key) const { return get(j, key, ""); }
  static std::string str_of(const Rec& r, const json& v, const std::string& name) {
    if (!v.is_string()) r.bad("field \"" + name + "\" must be a string");
    return v.get<std::string>();
  }
  std::string str(const std::string& key) const { return str_of(*this, field(key), key); }
  // An integer label given as a number or a string of digits ("2", 2).
  int64_t integer(const std::string& key) const {
    const json& v = field(key);
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_string()) {
      std::string s = py_strip(v.get<std::string>());
      if (!s.empty() && s.size() < 10 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::stoll(s);
    }
    bad("field \"" + key + "\" must be an integer, got " + v.dump());
  }
  // A boolean label: true/false, "true"/"false" (SuperGLUE's files store strings), or 0/1.
  bool boolean(const std::string& key) const {
    const json& v = field(key);
    if (v.is_boolean()) return v.get<bool>();
    if (v.is_number_integer() && (v.get<int64_t>() == 0 || v.get<int64_t>() == 1)) return v.get<int64_t>() == 1;
    if (v.is_string()) {
      std::string s = v.get<std::string>();
      std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
      if (s == "true") return true;
      if (s == "false") return false;
    }
    bad("field \"" + key + "\" must be true or false, got " + v.dump());
  }
  std::vector<std::string> strings(const std::string& key) const {
    const json& v = field(key);
    if (!v.is_array()) bad("field \"" + key + "\" must be an array of strings");
    std::vector<std::string> out;
    for (auto& e : v) {
      if (!e.is_string()) bad("field \"" + key + "\" must be an array of strings");
      out.push_back(e.get<std::string>());
    }
    return out;
  }
};

std::vector<Rec> read_jsonl(const fs::path& file) {
  std::vector<Rec> out;
  for (auto& l : read_lines(file)) {
    json j;
    try {
      j = json::parse(l.text);
    } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers past double
      std::string msg = e.what();
      if (auto p = msg.find("] "); msg.rfind("[json.exception", 0) == 0 && p != std::string::npos) msg.erase(0, p + 2);
      fail(file, l.number, "invalid JSON: " + msg);
    }
    if (!j.is_object()) fail(file, l.number, "expected a JSON object");
    out.push_back({file, l.number, std::move(j)});
  }
  return out;
}

// One label per non-blank line, each one of `allowed`.
std::vector<int> read_labels(const fs::path& file, const std::vector<std::string>& allowed, size_t expected,
                             const fs::path& items_file) {
  std::vector<int> out;
  for (auto& l : read_lines(file)) {
    std::string s = py_strip(l.text);
    auto it = std::find(allowed.begin(), allowed.end(), s);
    if (it == allowed.end()) {
      std::string all;
      for (auto& a : allowed) all += (all.empty() ? "" : " or ") + a;
      fail(file, l.number, "label must be " + all + ", got \"" + s + "\"");
    }
    if (out.size() == expected)
      fail(file, l.number, "more labels than the " + std::to_string(expected) + " items of " + items_file.string());
    out.push_back(int(it - allowed.begin()));
  }
  if (out.size() != expected)
    fail(file, int(out.size()) + 1,
         "only " + std::to_string(out.size()) + " labels for the " + std::to_string(expected) + " items of " +
             items_file.string());
  return out;
}

void check_gold(const Rec& r, int64_t gold, size_t k, const std::string& field) {
  if (gold < 0 || gold >= int64_t(k))
    r.bad("field \"" + field + "\" = " + std::to_string(gold) + " is out of range for " + std::to_string(k) + " choices");
}

// Same context for every choice, continuation = delimiter + choice.
McItem same_context(const std::string& ctx, const std::vector<std::string>& choices, const std::string& delim,
                    int gold, const Rec& r) {
  McItem it;
  it.contexts.assign(choices.size(), ctx);
  for (auto& c : choices) it.conts.push_back(delim + c);
  it.choices = choices;
  it.gold = gold;
  it.where = where(r.file, r.line);
  return it;
}

// ---- PIQA: {"goal", "sol1", "sol2"} + one 0/1 label per line.
std::vector<McItem> read_piqa(const fs::path& dir, std::vector<fs::path>& files) {
  fs::path jf = dir / "valid.jsonl", lf = dir / "valid-labels.lst";
  require_file(jf);
  require_file(lf);
  auto recs = read_jsonl(jf);
  auto labels = read_labels(lf, {"0", "1"}, recs.size(), jf);
  files = {jf, lf};
  std::vector<McItem> out;
  for (size_t i = 0; i < recs.size(); i++) {
    auto& r = recs[i];
    out.push_back(same_context("Question: " + r.str("goal") + "\nAnswer:", {r.str("sol1"), r.str("sol2")}, " ",
                               labels[i], r));
  }
  return out;
}

// ---- AI2 jsonl (ARC, OpenBookQA): {"question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}.
McItem read_ai2(const Rec& r, bool arc) {
  const json& q = r.field("question");
  std::string stem = Rec::str_of(r, r.get(q, "stem", "question"), "question.stem");
  const json& ch = r.get(q, "choices", "question");
  if (!ch.is_array() || ch.size() < 2) r.bad("field \"question.choices\" must be an array of at least 2 choices");
  std::vector<std::string> texts, labels;
  for (auto& c : ch) {
    texts.push_back(Rec::str_of(r, r.get(c, "text", "question.choices[]"), "question.choices[].text"));
    labels.push_back(Rec::str_of(r, r.get(c, "label", "question.choices[]"), "question.choices[].label"));
  }
  // lm-eval: choices.label.index(answerKey) (OpenBookQA: answerKey.lstrip()).
  std::string key = r.str("answerKey");
  if (!arc) key = key.substr(std::min(key.size(), key.find_first_not_of(" \t\n\r\f\v")));
  auto it = std::find(labels.begin(), labels.end(), key);
  if (it == labels.end()) {
    std::string all;
    for (auto& l : labels) all += (all.empty() ? "" : ",") + l;
    r.bad("answerKey \"" + key + "\" is not one of the choice labels " + all);
  }
  return same_context(arc ? "Question: " + stem + "\nAnswer:" : stem, texts, " ", int(it - labels.begin()), r);
}

std::vector<McItem> read_ai2_file(const fs::path& file, bool arc, std::vector<fs::path>& files) {
  require_file(file);
  files = {file};
  std::vector<McItem> out;
  for (auto& r : read_jsonl(file)) out.push_back(read_ai2(r, arc));
  return out;
}

// ---- OpenBookQA official TSV: header "ID, Question Stem, Choices, Complete Question, Answer Key";
// Choices = "(A) text (B) text (C) text (D) text".
std::vector<McItem> read_obqa_tsv(const fs::path& file, std::vector<fs::path>& files) {
  files = {file};
  auto lines = read_lines(file);
  auto split = [](const std::string& s) {
    std::vector<std::string> f;
    size_t a = 0;
    for (size_t b; (b = s.find('\t', a)) != std::string::npos; a = b + 1) f.push_back(s.substr(a, b - a));
    f.push_back(s.substr(a));
    return f;
  };
  auto header = split(lines[0].text);
  auto col = [&](const std::string& name) {
    auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) fail(file, lines[0].number, "header has no \"" + name + "\" column");
    return size_t(it - header.begin());
  };
  size_t c_stem = col("Question Stem"), c_choices = col("Choices"), c_key = col("Answer Key");
  if (lines.size() < 2) fail(file, lines[0].number + 1, "no items after the header");
  std::vector<McItem> out;
  for (size_t i = 1; i < lines.size(); i++) {
    Rec r{file, lines[i].number, json()};
    auto f = split(lines[i].text);
    if (f.size() != header.size())
      r.bad("expected " + std::to_string(header.size()) + " tab-separated fields, got " + std::to_string(f.size()));
    const std::string& cs = f[c_choices];
    std::vector<std::string> texts, labels;
    if (cs.rfind("(A) ", 0) != 0) r.bad("Choices must start with \"(A) \"");
    size_t pos = 4;
    for (char L = 'A';; L++) {
      std::string next = std::string(" (") + char(L + 1) + ") ";
      size_t e = cs.find(next, pos);
      texts.push_back(cs.substr(pos, e == std::string::npos ? std::string::npos : e - pos));
      labels.push_back(std::string(1, L));
      if (e == std::string::npos) break;
      pos = e + next.size();
    }
    if (texts.size() < 2) r.bad("Choices has fewer than 2 options");
    std::string key = py_strip(f[c_key]);
    auto it = std::find(labels.begin(), labels.end(), key);
    if (it == labels.end()) r.bad("Answer Key \"" + key + "\" is not one of the " + std::to_string(labels.size()) + " choices");
    out.push_back(same_context(f[c_stem], texts, " ", int(it - labels.begin()), r));
  }
  return out;
}

// ---- BoolQ: SuperGLUE val.jsonl {question, passage, label} or Google dev.jsonl
// {question, title, passage, answer}. SuperGLUE's passage is Google's "title -- passage".
std::vector<McItem> read_boolq(const fs::path& dir, std::vector<fs::path>& files) {
  fs::path sg = dir / "val.jsonl", google = dir / "dev.jsonl";
  bool superglue = fs::exists(sg);
  fs::path file = superglue ? sg : google;
  if (!superglue && !fs::exists(google))
    throw UserError("task file " + sg.string() + " not found (nor " + google.filename().string() + ")");
  files = {file};
  std::vector<McItem> out;
  for (auto& r : read_jsonl(file)) {
    std::string passage = r.str("passage");
    if (!superglue && r.j.contains("title")) passage = r.str("title") + " -- " + passage;
    bool yes = r.boolean(superglue ? "label" : "answer");
    out.push_back(same_context(passage + "\nQuestion: " + r.str("question") + "?\nAnswer:", {"no", "yes"}, " ",
                               yes ? 1 : 0, r));
  }
  return out;
}

// ---- HellaSwag: {activity_label, ctx_a, ctx_b, endings[4], label}.
std::vector<McItem> read_hellaswag(const fs::path& dir, std::vector<fs::path>& files) {
  fs::path file = dir / "hellaswag_val.jsonl";
  require_file(file);
  files = {file};
  std::vector<McItem> out;
  for (auto& r : read_jsonl(file)) {
    std::string ctx = r.str("ctx_a") + " " + py_capitalize(r.str("ctx_b"));
    std::string query = hellaswag_preprocess(r.str("activity_label") + ": " + ctx);
    auto endings = r.strings("endings");
    if (endings.size() < 2) r.bad("field \"endings\" must have at least 2 entries");
    for (auto& e : endings) e = hellaswag_preprocess(e);
    int64_t gold = r.integer("label");
    check_gold(r, gold, endings.size(), "label");
    out.push_back(same_context(query, endings, " ", int(gold), r));
  }
  return out;
}

// ---- WinoGrande, partial scoring: context_k = sentence up to "_" with option k, continuation =
// " " + the rest after "_" (stripped); choices (for lengths) are the contexts, as in lm-eval.
McItem winogrande_item(std::vector<std::string> contexts, const std::string& rest, int gold, const Rec& r) {
  McItem it;
  it.conts.assign(contexts.size(), " " + py_strip(rest));
  it.choices = contexts;
  it.contexts = std::move(contexts);
  it.gold = gold;
  it.where = where(r.file, r.line);
  return it;
}

std::vector<McItem> read_winogrande(const fs::path& dir, std::vector<fs::path>& files) {
  fs::path orig = dir / "dev.jsonl", conv = dir / "winogrande.jsonl", lab = dir / "dev-labels.lst";
  std::vector<McItem> out;
  fs::path file;
  if (fs::exists(orig)) {
    file = orig;
    for (auto& r : read_jsonl(orig)) {
      std::string s = r.str("sentence");
      size_t idx = s.find('_');
      if (idx == std::string::npos) r.bad("field \"sentence\" has no \"_\" blank");
      int64_t ans = r.integer("answer");
      if (ans != 1 && ans != 2) r.bad("field \"answer\" must be 1 or 2, got " + std::to_string(ans));
      out.push_back(winogrande_item({s.substr(0, idx) + r.str("option1"), s.substr(0, idx) + r.str("option2")},
                                    s.substr(idx + 1), int(ans - 1), r));
    }
  } else if (fs::exists(conv)) {
    file = conv;
    for (auto& r : read_jsonl(conv)) {
      auto ctxs = r.strings("context_options");
      if (ctxs.size() < 2) r.bad("field \"context_options\" must have at least 2 entries");
      int64_t gold = r.integer("gold");
      check_gold(r, gold, ctxs.size(), "gold");
      out.push_back(winogrande_item(ctxs, r.str("continuation"), int(gold), r));
    }
  } else {
    throw UserError("task file " + orig.string() + " not found (nor " + conv.filename().string() + ")");
  }
  files = {file};
  if (fs::exists(lab)) {  // the official labels must agree with the items' answers
    auto labels = read_labels(lab, {"1", "2"}, out.size(), file);
    files.push_back(lab);
    for (size_t i = 0; i < out.size(); i++)
      if (labels[i] != out[i].gold)
        throw UserError(lab.string() + ": label " + std::to_string(labels[i] + 1) + " of item " + std::to_string(i + 1) +
                        " disagrees with " + out[i].where);
  }
  return out;
}

// ---- Generic multiple choice {query, choices, gold}: each choice appended to the query as is.
std::vector<McItem> read_generic(const fs::path& file, std::vector<fs::path>& files) {
  require_file(file);
  files = {file};
  std::vector<McItem> out;
  for (auto& r : read_jsonl(file)) {
    auto choices = r.strings("choices");
    if (choices.size() < 2) r.bad("field \"choices\" must have at least 2 entries");
    int64_t gold = r.integer("gold");
    check_gold(r, gold, choices.size(), "gold");
    out.push_back(same_context(r.str("query"), choices, "", int(gold), r));
  }
  return out;
}

}  // namespace

const std::vector<TaskInfo>& known_tasks() {
  static const std::vector<TaskInfo> t = {
      {"boolq", "BoolQ", "boolq", false, "acc"},
      {"piqa", "PIQA", "piqa", true, "acc"},
      {"hellaswag", "HellaSwag", "hellaswag", true, "acc_norm"},
      {"winogrande", "WinoGrande", "winogrande", false, "acc"},
      {"arc_easy", "ARC-e", "arc", true, "acc"},
      {"arc_challenge", "ARC-c", "arc", true, "acc_norm"},
      {"openbookqa", "OBQA", "openbookqa", true, "acc_norm"},
      {"kjv_cloze", "KJV-cloze", "kjv-cloze", true, "acc"},
  };
  return t;
}

const TaskInfo& task_info(const std::string& name) {
  for (auto& t : known_tasks())
    if (t.name == name) return t;
  std::string all;
  for (auto& t : known_tasks()) all += (all.empty() ? "" : ", ") + t.name;
  throw UserError("unknown task \"" + name + "\" (known: " + all + ")");
}

TaskData load_task(const std::string& name, const fs::path& task_dir) {
  TaskData d;
  d.info = task_info(name);
  fs::path dir = task_dir / d.info.folder;
  if (!fs::is_directory(dir)) throw UserError("task folder " + dir.string() + " not found (task " + name + ")");
  if (name == "boolq") d.items = read_boolq(dir, d.files);
  else if (name == "piqa") d.items = read_piqa(dir, d.files);
  else if (name == "hellaswag") d.items = read_hellaswag(dir, d.files);
  else if (name == "winogrande") d.items = read_winogrande(dir, d.files);
  else if (name == "arc_easy") d.items = read_ai2_file(dir / "ARC-Easy-Test.jsonl", true, d.files);
  else if (name == "arc_challenge") d.items = read_ai2_file(dir / "ARC-Challenge-Test.jsonl", true, d.files);
  else if (name == "openbookqa") {
    if (fs::exists(dir / "test.jsonl")) d.items = read_ai2_file(dir / "test.jsonl", false, d.files);
    else {
      require_file(dir / "test.tsv");
      d.items = read_obqa_tsv(dir / "test.tsv", d.files);
    }
  } else if (name == "kjv_cloze") d.items = read_generic(dir / "test.jsonl", d.files);
  return d;
}

}  // namespace llmprune
