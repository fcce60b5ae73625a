#pragma once
// Typed reads of JSON fields with one-line errors naming the file, where the object sits
// ("layers[3]: ") and the field: for the JSON files llmprune reads back (pruning.json,
// importance.json, eval results).
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"

namespace llmprune {

struct JsonReader {
  std::string file;
  const nlohmann::json& need(const nlohmann::json& j, const char* key, const std::string& where = "") const {
    if (!j.is_object() || !j.contains(key)) throw input_error(file, where + "missing field '" + key + "'");
    return j.at(key);
  }
  template <class T>
  T get(const nlohmann::json& j, const char* key, const std::string& where = "") const {
    const nlohmann::json& v = need(j, key, where);
    try {
      return v.get<T>();
    } catch (const nlohmann::json::exception&) {
      throw input_error(file, where + "field '" + key + "' has the wrong type");
    }
  }
  // The field, or `fallback` when absent or null.
  template <class T>
  T opt(const nlohmann::json& j, const char* key, T fallback, const std::string& where = "") const {
    if (!j.is_object() || !j.contains(key) || j.at(key).is_null()) return fallback;
    return get<T>(j, key, where);
  }
  const nlohmann::json& array(const nlohmann::json& j, const char* key, const std::string& where = "") const {
    const nlohmann::json& v = need(j, key, where);
    if (!v.is_array()) throw input_error(file, where + "field '" + key + "' must be an array");
    return v;
  }
};

}  // namespace llmprune
