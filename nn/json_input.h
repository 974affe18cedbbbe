// The one way diffuse reads JSON that came from a user's file (config.json, scheduler_config.json,
// a safetensors header, a checkpoint's saved state; docs/design.md §9, docs/formats.md "Limits").
// Files come from strangers, so: text over a size limit and values nested deeper than a depth
// limit are refused before a deep tree is built (nlohmann's parser is iterative, but printing or
// copying a value recurses); a key named twice in one object is refused instead of silently
// keeping the last; every failure is one diffuse::Error (ErrorKind::bad_input) naming the source.
// Error messages quote user values only through json_excerpt/text_excerpt: bounded, one level
// deep, UTF-8-clean. Numbers that become integers go through json_integer (integral, in range).
#pragma once
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace diffuse {

// Deepest nesting accepted: the top-level value is depth 1. diffusers' configs need 2, a
// safetensors header 3.
constexpr int kMaxJsonDepth = 64;
// Largest JSON text accepted by default (configs and saved state are a few KB).
constexpr size_t kMaxJsonInputBytes = size_t{16} << 20;
// Longest excerpt of a user's value or string in an error message, before the "..." marker.
constexpr size_t kMaxExcerptChars = 80;

// Parses `text`; throws diffuse::Error (bad_input) "<source>: ..." when it is longer than
// max_bytes, nested deeper than kMaxJsonDepth, names a key twice in one object, or is not JSON.
nlohmann::json parse_json_input(std::string_view text, const std::string& source,
                                size_t max_bytes = kMaxJsonInputBytes);

// Reads a whole file for parse_json_input, refusing (bad_input, naming the file and `what`) one
// that cannot be opened, is not a regular file or is larger than max_bytes — before reading it.
std::string read_json_input_file(const std::string& path, const std::string& what,
                                 size_t max_bytes = kMaxJsonInputBytes);

// A value for an error message: scalars as JSON, strings through text_excerpt, arrays and objects
// one level deep with nested containers shown as [N items] / {N keys}; at most about
// kMaxExcerptChars characters. Never recurses.
std::string json_excerpt(const nlohmann::json& v);

// A raw user string (a key, a file name read from a file) for an error message: at most
// kMaxExcerptChars characters then "...(N bytes)"; control characters and bytes that are not valid
// UTF-8 are shown as \n, \t, \xNN; valid multi-byte UTF-8 is kept.
std::string text_excerpt(std::string_view text);

// The one checked JSON number → integer conversion: `v` must be a number with an integral value
// in [min, max] (2.0 is 2; 2.5, 1e30, "2" and true are refused). Throws bad_input
// "<what> = <excerpt> is not an integer in [min, max]".
int64_t json_integer(const nlohmann::json& v, int64_t min, int64_t max, const std::string& what);

}  // namespace diffuse
