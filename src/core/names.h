#pragma once
// Command-line names of an enum, stated once: the parser, the printed name and the error's list of
// accepted values all read the same table, so they cannot drift apart.
#include <array>
#include <string>
#include <utility>

#include "core/error.h"

namespace llmprune {

template <class E, size_t N>
using NameTable = std::array<std::pair<E, const char*>, N>;

// The value named `s`; otherwise UserError "<flag> '<s>' is not one of <a>, <b>, ...".
template <class E, size_t N>
E parse_name(const NameTable<E, N>& table, const std::string& s, const char* flag) {
  std::string all;
  for (const auto& [value, name] : table) {
    if (s == name) return value;
    all += (all.empty() ? "" : ", ") + std::string(name);
  }
  throw UserError(std::string(flag) + " '" + s + "' is not one of " + all);
}

template <class E, size_t N>
std::string name_of(const NameTable<E, N>& table, E e) {
  for (const auto& [value, name] : table)
    if (value == e) return name;
  return "?";
}

}  // namespace llmprune
