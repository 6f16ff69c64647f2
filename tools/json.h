// tools/json.h: a strict parser for exactly the shape of user.pmemfuse.stats
// (daemon/control.cc): one object whose members are unsigned integers, booleans, or
// objects ("sections") of unsigned integers and booleans. Keys are plain identifiers.
// Anything else (strings as values, arrays, deeper nesting, signs, fractions, escapes,
// duplicate keys or sections, trailing text) is rejected with its byte offset, so a
// daemon that changes the shape is noticed instead of misread.
#pragma once

#include <cctype>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "mm/result.h"

namespace pmemfuse::tools {

struct JsonValue {
  bool is_bool = false;
  uint64_t num = 0;  // a boolean: 0 or 1
};
// "section.key" for members of a section, "key" for top-level members.
using FlatJson = std::map<std::string, JsonValue>;

class FlatJsonParser {
 public:
  static Result<FlatJson> parse(std::string_view text) {
    FlatJsonParser p(text);
    FlatJson out;
    PF_CHECK(p.object(out, ""));
    p.skip_ws();
    if (p.pos_ != text.size()) return p.fail("unexpected text after the object");
    return out;
  }

 private:
  explicit FlatJsonParser(std::string_view s) : s_(s) {}

  Status object(FlatJson& out, const std::string& section) {
    if (!eat('{')) return fail("expected '{'");
    if (eat('}')) return {};
    do {
      PF_TRY(key, identifier());
      if (!eat(':')) return fail("expected ':' after \"" + key + "\"");
      std::string name = section.empty() ? key : section + "." + key;
      auto next = out.lower_bound(name);  // name itself, or the first key of section name
      if (next != out.end() && (next->first == name || next->first.starts_with(name + "."))) {
        return fail("duplicate key \"" + name + "\"");
      }
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == '{') {
        if (!section.empty()) return fail("section \"" + name + "\" nested too deep");
        PF_CHECK(object(out, name));
      } else {
        PF_TRY(v, scalar());
        out.emplace(name, v);
      }
    } while (eat(','));
    if (!eat('}')) return fail("expected ',' or '}'");
    return {};
  }

  Result<std::string> identifier() {
    if (!eat('"')) return fail("expected a quoted key");
    size_t start = pos_;
    while (pos_ < s_.size() && (std::isalnum(uint8_t(s_[pos_])) || s_[pos_] == '_')) pos_++;
    if (pos_ == start || !eat_here('"')) return fail("a key must be letters, digits and '_'");
    return std::string(s_.substr(start, pos_ - 1 - start));
  }

  Result<JsonValue> scalar() {
    for (auto [word, v] : {std::pair{"true", 1}, std::pair{"false", 0}}) {
      if (s_.substr(pos_).starts_with(word)) {
        pos_ += std::string_view(word).size();
        return JsonValue{true, uint64_t(v)};
      }
    }
    size_t start = pos_;
    uint64_t n = 0;
    for (; pos_ < s_.size() && std::isdigit(uint8_t(s_[pos_])); pos_++) {
      uint64_t d = uint64_t(s_[pos_] - '0');
      if (n > (UINT64_MAX - d) / 10) return fail("number out of range");
      n = n * 10 + d;
    }
    if (pos_ == start) return fail("expected an unsigned integer, true or false");
    if (s_[start] == '0' && pos_ - start > 1) return fail("number with a leading zero");
    return JsonValue{false, n};
  }

  void skip_ws() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' || s_[pos_] == '\r'))
      pos_++;
  }
  bool eat(char c) {
    skip_ws();
    return eat_here(c);
  }
  bool eat_here(char c) {
    if (pos_ >= s_.size() || s_[pos_] != c) return false;
    pos_++;
    return true;
  }
  Error fail(const std::string& what) const {
    return make_error(Errc::kInvalid, "offset " + std::to_string(pos_) + ": " + what);
  }

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace pmemfuse::tools
