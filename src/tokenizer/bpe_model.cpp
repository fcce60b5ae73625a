#include "tokenizer/bpe_model.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <queue>
#include <stdexcept>

#include "tokenizer/bpe_text.h"

namespace llmprune::bpe {

BpeModel::BpeModel(PieceMap vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                   BpeOptions options)
    : vocab_(std::move(vocab)), options_(std::move(options)), merges_(merges) {
  int32_t max_id = -1;
  for (const auto& [piece, id] : vocab_) max_id = std::max(max_id, id);
  producing_rank_.assign(static_cast<size_t>(max_id + 1), -1);

  const std::string& prefix = options_.continuing_subword_prefix;
  merge_by_pair_.reserve(merges_.size() * 2);
  for (size_t rank = 0; rank < merges_.size(); rank++) {
    const auto& [left, right] = merges_[rank];
    auto left_it = vocab_.find(left);
    auto right_it = vocab_.find(right);
    if (left_it == vocab_.end() || right_it == vocab_.end())
      throw std::invalid_argument("merge #" + std::to_string(rank) + " \"" + left + " " + right +
                                  "\" uses a piece that is not in model.vocab");
    // With a continuing-subword prefix the right half carries it, the merged piece does not.
    std::string merged = left;
    if (!prefix.empty() && right.compare(0, prefix.size(), prefix) == 0)
      merged.append(right, prefix.size());
    else
      merged.append(right);
    auto merged_it = vocab_.find(merged);
    if (merged_it == vocab_.end())
      throw std::invalid_argument("merge #" + std::to_string(rank) + " \"" + left + " " + right +
                                  "\" makes \"" + merged + "\", which is not in model.vocab");
    // The first (lowest-rank) occurrence of a duplicated pair wins.
    merge_by_pair_.try_emplace(pair_key(left_it->second, right_it->second),
                               Merge{static_cast<int32_t>(rank), merged_it->second});
    int32_t& produced = producing_rank_[static_cast<size_t>(merged_it->second)];
    if (produced < 0) produced = static_cast<int32_t>(rank);
  }

  for (int b = 0; b < 256; b++) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    if (auto it = vocab_.find(std::string_view(name)); it != vocab_.end()) byte_token_ids_[b] = it->second;
  }
  if (prefix.empty() && options_.end_of_word_suffix.empty())
    for (int c = 0; c < 128; c++)
      if (auto it = vocab_.find(std::string(1, static_cast<char>(c))); it != vocab_.end())
        single_byte_char_id_[c] = it->second;
}

int32_t BpeModel::producing_merge_rank(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < producing_rank_.size() ? producing_rank_[id] : -1;
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (options_.ignore_merges)
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }

  // Initial symbols: one per character, or its bytes, or unk.
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  const bool affixes = !options_.continuing_subword_prefix.empty() || !options_.end_of_word_suffix.empty();
  bool previous_was_unk = false;
  std::string affixed;
  size_t pos = 0;
  while (pos < word.size()) {
    size_t len = utf8_sequence_length(word, pos);
    if (len == 0) len = 1;
    std::string_view ch = word.substr(pos, len);
    const bool first = pos == 0;
    pos += len;
    const bool last = pos >= word.size();

    int32_t id = -1;
    unsigned char lead = static_cast<unsigned char>(ch[0]);
    if (len == 1 && lead < 0x80 && !affixes) {
      id = single_byte_char_id_[lead];
    } else {
      std::string_view key = ch;
      if (affixes) {
        affixed.clear();
        if (!first) affixed += options_.continuing_subword_prefix;
        affixed.append(ch);
        if (last) affixed += options_.end_of_word_suffix;
        key = affixed;
      }
      if (auto it = vocab_.find(key); it != vocab_.end()) id = it->second;
    }
    if (id >= 0) {
      symbols.push_back(id);
      previous_was_unk = false;
      continue;
    }
    if (options_.byte_fallback) {
      bool all_bytes_known = true;
      for (char c : ch) all_bytes_known &= byte_token_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all_bytes_known) {
        for (char c : ch) symbols.push_back(byte_token_ids_[static_cast<unsigned char>(c)]);
        previous_was_unk = false;
        continue;
      }
    }
    // No unk token configured: HF drops the character silently; so do we.
    if (!options_.unk_id) continue;
    if (!(options_.fuse_unk && previous_was_unk)) symbols.push_back(*options_.unk_id);
    previous_was_unk = true;
  }
  merge_symbols(symbols, out);
}

void BpeModel::merge_symbols(std::vector<int32_t>& ids, std::vector<int32_t>& out) const {
  const size_t n = ids.size();
  auto lookup = [&](int32_t left, int32_t right) -> const Merge* {
    auto it = merge_by_pair_.find(pair_key(left, right));
    return it == merge_by_pair_.end() ? nullptr : &it->second;
  };

  if (n < 2) {
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }

  if (n <= 64) {
    // Short words (nearly all of them): keep each adjacent pair's rank in an array and scan for
    // the minimum; no hashing beyond the two neighbours a merge changes.
    std::vector<int32_t> rank(n - 1), result(n - 1);
    for (size_t i = 0; i + 1 < n; i++) {
      const Merge* m = lookup(ids[i], ids[i + 1]);
      rank[i] = m ? m->rank : INT32_MAX;
      result[i] = m ? m->result_id : -1;
    }
    while (!rank.empty()) {
      size_t best = 0;
      for (size_t i = 1; i < rank.size(); i++)
        if (rank[i] < rank[best]) best = i;
      if (rank[best] == INT32_MAX) break;
      ids[best] = result[best];
      ids.erase(ids.begin() + static_cast<ptrdiff_t>(best) + 1);
      rank.erase(rank.begin() + static_cast<ptrdiff_t>(best));
      result.erase(result.begin() + static_cast<ptrdiff_t>(best));
      auto refresh = [&](size_t i) {
        const Merge* m = lookup(ids[i], ids[i + 1]);
        rank[i] = m ? m->rank : INT32_MAX;
        result[i] = m ? m->result_id : -1;
      };
      if (best > 0) refresh(best - 1);
      if (best < rank.size()) refresh(best);
    }
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }

  // Long words (runs of whitespace, digits, text without spaces in SentencePiece-style models):
  // doubly linked symbols and a min-heap of candidate merges keyed by (rank, position). Stale
  // heap entries are recognised by re-checking both symbols when popped.
  std::vector<int32_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (size_t i = 0; i < n; i++) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  struct Candidate {
    int32_t rank, left, right, left_id, right_id, result_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto offer = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    if (const Merge* m = lookup(ids[left], ids[right]))
      heap.push({m->rank, left, right, ids[left], ids[right], m->result_id});
  };
  for (size_t i = 0; i + 1 < n; i++) offer(static_cast<int32_t>(i), static_cast<int32_t>(i + 1));
  while (!heap.empty()) {
    Candidate c = heap.top();
    heap.pop();
    if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right || ids[c.left] != c.left_id ||
        ids[c.right] != c.right_id)
      continue;
    ids[c.left] = c.result_id;
    alive[c.right] = false;
    next[c.left] = next[c.right];
    if (next[c.right] >= 0) prev[next[c.right]] = c.left;
    offer(prev[c.left], c.left);
    offer(c.left, next[c.left]);
  }
  for (int32_t i = 0; i >= 0; i = next[i]) out.push_back(ids[i]);
}

}  // namespace llmprune::bpe
