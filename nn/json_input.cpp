// See json_input.h. The depth limit and the duplicate-key check live in nlohmann's parser
// callback, which sees every object/array start with its depth before the value is built, so a
// 100,000-deep value stops at depth kMaxJsonDepth + 1 with a tree no deeper than the limit.
#include "nn/json_input.h"

#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <set>
#include <vector>

#include "diffuse/error.h"

namespace diffuse {

using json = nlohmann::json;

namespace {

[[noreturn]] void refuse(const std::string& message) { throw Error(message, ErrorKind::bad_input); }

// Appends the UTF-8 sequence starting at s[i] and returns its length, or 0 when s[i] does not
// start a valid, shortest-form sequence of a scalar value (RFC 3629).
size_t valid_utf8_length(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char lead = byte(i);
  size_t length = 0;
  unsigned char lo = 0x80, hi = 0xbf;  // allowed range of the first continuation byte
  if (lead >= 0xc2 && lead <= 0xdf) length = 2;
  else if (lead == 0xe0) length = 3, lo = 0xa0;
  else if (lead == 0xed) length = 3, hi = 0x9f;  // no UTF-16 surrogates
  else if (lead >= 0xe1 && lead <= 0xef) length = 3;
  else if (lead == 0xf0) length = 4, lo = 0x90;
  else if (lead >= 0xf1 && lead <= 0xf3) length = 4;
  else if (lead == 0xf4) length = 4, hi = 0x8f;  // nothing above U+10FFFF
  else return 0;
  if (i + length > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < length; ++k)
    if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) return 0;
  return length;
}

std::string hex_byte(unsigned char c) {
  static const char kDigits[] = "0123456789abcdef";
  return std::string("\\x") + kDigits[c >> 4] + kDigits[c & 15];
}

// text_excerpt with a chosen bound (parse errors get a little more room than values).
std::string bounded_excerpt(std::string_view text, size_t max_chars) {
  std::string out;
  size_t i = 0;
  while (i < text.size() && out.size() < max_chars) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      if (c == '\n') out += "\\n";
      else if (c == '\t') out += "\\t";
      else if (c == '\r') out += "\\r";
      else if (c == '\\') out += "\\\\";
      else if (c < 0x20 || c == 0x7f) out += hex_byte(c);
      else out += static_cast<char>(c);
      ++i;
      continue;
    }
    size_t n = valid_utf8_length(text, i);
    if (n == 0) {
      out += hex_byte(c);
      ++i;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  if (i < text.size()) out += "...(" + std::to_string(text.size()) + " bytes)";
  return out;
}

// One element of a container in an excerpt: containers are not entered.
// (Built by appending: GCC 12 warns, wrongly, on `"literal" + std::string&&` here: -Wrestrict.)
std::string enclosed(const char* open, const std::string& inner, const char* close) {
  std::string out(open);
  out += inner;
  out += close;
  return out;
}

std::string shallow(const json& v) {
  if (v.is_array()) return enclosed("[", std::to_string(v.size()), " items]");
  if (v.is_object()) return enclosed("{", std::to_string(v.size()), " keys}");
  if (v.is_string()) return enclosed("\"", text_excerpt(v.get_ref<const std::string&>()), "\"");
  return v.dump();  // null, a boolean or a number: short by nature
}

}  // namespace

std::string text_excerpt(std::string_view text) { return bounded_excerpt(text, kMaxExcerptChars); }

std::string json_excerpt(const json& v) {
  if (!v.is_array() && !v.is_object()) return shallow(v);
  const bool array = v.is_array();
  std::string out = array ? "[" : "{";
  bool first = true;
  for (auto it = v.begin(); it != v.end(); ++it) {
    std::string piece = array ? shallow(*it) : enclosed("\"", text_excerpt(it.key()), "\": ") + shallow(it.value());
    if (!first && out.size() + piece.size() > kMaxExcerptChars) {
      out += ", ...";
      break;
    }
    out += (first ? "" : ", ") + piece;
    first = false;
  }
  return out + (array ? "]" : "}");
}

json parse_json_input(std::string_view text, const std::string& source, size_t max_bytes) {
  if (text.size() > max_bytes)
    refuse(source + ": " + std::to_string(text.size()) + " bytes of JSON is over the limit of " +
           std::to_string(max_bytes) + " bytes");
  // keys_at[d]: the keys seen so far in the object currently open at depth d.
  std::vector<std::set<std::string>> keys_at;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    // depth counts the containers already open, so the value starting now is at depth + 1.
    if (event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) {
      if (depth + 1 > kMaxJsonDepth)
        refuse(source + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
      if (event == json::parse_event_t::object_start) {
        if (keys_at.size() < static_cast<size_t>(depth) + 2) keys_at.resize(static_cast<size_t>(depth) + 2);
        keys_at[static_cast<size_t>(depth) + 1].clear();
      }
    } else if (event == json::parse_event_t::key && parsed.is_string()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!keys_at.at(static_cast<size_t>(depth)).insert(key).second)
        refuse(source + ": key \"" + text_excerpt(key) + "\" appears twice in one JSON object");
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), on_event);
  } catch (const json::exception& e) {
    // nlohmann's text quotes the last token read, which may be long or hold raw bytes.
    std::string what = e.what();
    if (auto pos = what.find("] "); what.rfind("[json.exception", 0) == 0 && pos != std::string::npos)
      what = what.substr(pos + 2);
    refuse(source + ": not valid JSON (" + bounded_excerpt(what, 2 * kMaxExcerptChars) + ")");
  }
}

std::string read_json_input_file(const std::string& path, const std::string& what, size_t max_bytes) {
  // stat before opening: opening a FIFO or a device named as a config would block or never end.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) refuse(path + ": cannot open " + what);
  if (!S_ISREG(st.st_mode)) refuse(path + ": " + what + " is not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) refuse(path + ": cannot open " + what);
  if (static_cast<uint64_t>(st.st_size) > max_bytes)
    refuse(path + ": " + what + " is " + std::to_string(st.st_size) + " bytes, over the limit of " +
           std::to_string(max_bytes) + " bytes");
  std::string text(static_cast<size_t>(st.st_size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (in.bad()) refuse(path + ": cannot read " + what);
  return text;
}

int64_t json_integer(const json& v, int64_t min, int64_t max, const std::string& what) {
  bool ok = false;
  int64_t out = 0;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    ok = max >= 0 && u <= static_cast<uint64_t>(max);
    out = ok ? static_cast<int64_t>(u) : 0;
  } else if (v.is_number_integer()) {
    out = v.get<int64_t>();
    ok = true;
  } else if (v.is_number_float()) {
    const double d = v.get<double>();
    // ±2^62 keeps the cast defined; every limit diffuse uses is far inside it.
    ok = std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 0x1p62;
    out = ok ? static_cast<int64_t>(d) : 0;
  }
  if (!ok || out < min || out > max)
    refuse(what + " = " + json_excerpt(v) + " is not an integer in [" + std::to_string(min) + ", " +
           std::to_string(max) + "]");
  return out;
}

}  // namespace diffuse
