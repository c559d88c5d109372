// SPDX-License-Identifier: MIT
// Small helpers shared by the moekit command-line subcommands: argument
// parsing with clear errors, JSON string escaping.
#pragma once

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <moekit/core/error.hpp>

namespace moekit_cli {

/// Parsed "--name value" options, "--flag" switches and positional arguments.
struct Args {
  std::map<std::string, std::string> options;
  std::vector<std::string> flags;
  std::vector<std::string> positional;

  bool flag(const std::string& name) const {
    for (const auto& f : flags)
      if (f == name) return true;
    return false;
  }
  bool has(const std::string& name) const { return options.count(name) != 0; }
  std::string get(const std::string& name, const std::string& fallback = "") const {
    const auto it = options.find(name);
    return it == options.end() ? fallback : it->second;
  }
  long long get_int(const std::string& name, long long fallback) const {
    if (!has(name)) return fallback;
    const std::string& s = options.at(name);
    char* end = nullptr;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (end == s.c_str() || *end != '\0') moekit::detail::fail("--", name, ": expected an integer, got \"", s, "\"");
    return v;
  }
};

/// Splits argv[first..] into options (names in `valued` take a value), flags and positionals.
inline Args parse_args(int argc, char** argv, int first, const std::vector<std::string>& valued) {
  Args a;
  for (int i = first; i < argc; ++i) {
    const std::string s = argv[i];
    if (s.rfind("--", 0) == 0) {
      const std::string name = s.substr(2);
      bool takes_value = false;
      for (const auto& v : valued) takes_value = takes_value || v == name;
      if (takes_value) {
        if (i + 1 >= argc) moekit::detail::fail(s, ": expected a value");
        a.options[name] = argv[++i];
      } else {
        a.flags.push_back(name);
      }
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

inline std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace moekit_cli
