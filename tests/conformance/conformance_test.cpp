// SPDX-License-Identifier: MIT
// Golden-case conformance suite.
//
// Every `*.safetensors` file under the conformance directory (found at run
// time, recursively) becomes one test, named after its path relative to the
// directory: `mixtral/t7_e8_k2.safetensors` -> `Golden/ConformanceCase.Run/mixtral_t7_e8_k2`.
// New cases of a family are therefore picked up without touching this file.
//
// For the families a SwiGluMoEBlock (softmax top-k router + SwiGLU experts +
// weighted sum) can express, the block is built from the file's metadata and
// weights and run on `input`; router logits, top-k ids (exact, rank order),
// top-k weights and the output are compared with the golden tensors, and the
// double-precision oracle moekit::reference::forward is checked against the
// same golden output. The Mixtral-form aux loss (SEMANTICS.md §A) is computed
// test-side from the block's logits and compared with `aux_loss`.
//
// Files of families the block cannot express yet are listed and reported as
// SKIPPED with the missing capability; a file of an unknown family fails.
//
// The directory comes from the compile definition MOEKIT_CONFORMANCE_DIR, or
// from the environment variable of the same name when it is set (it wins).
// MOEKIT_REQUIRE_CONFORMANCE (compile definition, or environment "1"/"ON"/"0"/"OFF")
// turns a missing directory or an empty one into a failure instead of a skip.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "moekit/moekit.hpp"
#include "safetensors_lite.hpp"

#ifndef MOEKIT_CONFORMANCE_DIR
#define MOEKIT_CONFORMANCE_DIR ""
#endif
#ifndef MOEKIT_REQUIRE_CONFORMANCE
#define MOEKIT_REQUIRE_CONFORMANCE 0
#endif

namespace {

namespace fs = std::filesystem;
namespace st = moekit_test::safetensors;
using moekit::Index;
using moekit::IdMatrix;
using moekit::Matrix;

// ---------------------------------------------------------------------------
// Configuration and discovery

std::string conformance_dir() {
  if (const char* env = std::getenv("MOEKIT_CONFORMANCE_DIR"); env && *env) return env;
  return MOEKIT_CONFORMANCE_DIR;
}

bool require_conformance() {
  if (const char* env = std::getenv("MOEKIT_REQUIRE_CONFORMANCE"); env && *env) {
    std::string v(env);
    std::transform(v.begin(), v.end(), v.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return !(v == "0" || v == "OFF" || v == "FALSE" || v == "NO");
  }
  return MOEKIT_REQUIRE_CONFORMANCE != 0;
}

struct GoldenCase {
  std::string path;  // absolute or as given
  std::string rel;   // relative to the conformance directory
  std::string name;  // test name: rel without extension, [A-Za-z0-9_] only
};

void PrintTo(const GoldenCase& c, std::ostream* os) { *os << c.rel; }

std::string sanitize(const std::string& s) {
  std::string out;
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    out += std::isalnum(u) ? ch : '_';
  }
  if (out.empty() || std::isdigit(static_cast<unsigned char>(out[0]))) out = "case_" + out;
  return out;
}

struct Discovery {
  bool dir_exists = false;
  std::string error;  // a filesystem error met while scanning
  std::vector<GoldenCase> cases;
};

Discovery discover() {
  Discovery d;
  const fs::path root(conformance_dir());
  std::error_code ec;
  if (root.empty() || !fs::is_directory(root, ec)) return d;
  d.dir_exists = true;
  std::vector<fs::path> files;
  fs::recursive_directory_iterator it(
      root, fs::directory_options::follow_directory_symlink | fs::directory_options::skip_permission_denied,
      ec);
  const fs::recursive_directory_iterator end;
  for (; !ec && it != end; it.increment(ec)) {
    std::error_code fec;
    if (it->path().extension() == ".safetensors" && fs::is_regular_file(it->path(), fec))
      files.push_back(it->path());
  }
  if (ec) d.error = "scanning '" + root.string() + "': " + ec.message();
  std::sort(files.begin(), files.end());
  std::set<std::string> used;
  for (const fs::path& p : files) {
    GoldenCase c;
    c.path = p.string();
    fs::path rel = p.lexically_relative(root);
    c.rel = rel.generic_string();
    rel.replace_extension();
    std::string name = sanitize(rel.generic_string());
    for (int i = 2; used.count(name); ++i) name = sanitize(rel.generic_string()) + "_" + std::to_string(i);
    used.insert(name);
    c.name = name;
    d.cases.push_back(std::move(c));
  }
  return d;
}

const Discovery& discovery() {
  static const Discovery d = discover();
  return d;
}

std::vector<GoldenCase> golden_cases() { return discovery().cases; }

// ---------------------------------------------------------------------------
// Metadata helpers (every value is a string; booleans "True"/"False", missing "null")

bool is_null(const std::string& v) { return v.empty() || v == "null" || v == "None"; }

Index meta_index(const st::File& f, const std::string& key) {
  const std::string& v = f.meta(key);
  std::size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size() || n < 0)
    throw std::runtime_error("metadata '" + key + "' = '" + v + "' is not a non-negative integer");
  return static_cast<Index>(n);
}

std::optional<double> meta_double(const st::File& f, const std::string& key) {
  if (!f.has_meta(key) || is_null(f.meta(key))) return std::nullopt;
  const std::string& v = f.meta(key);
  std::size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size())
    throw std::runtime_error("metadata '" + key + "' = '" + v + "' is not a number");
  return x;
}

std::optional<bool> meta_bool(const st::File& f, const std::string& key) {
  if (!f.has_meta(key) || is_null(f.meta(key))) return std::nullopt;
  const std::string& v = f.meta(key);
  if (v == "True" || v == "true" || v == "1") return true;
  if (v == "False" || v == "false" || v == "0") return false;
  throw std::runtime_error("metadata '" + key + "' = '" + v + "' is not a boolean");
}

std::string shape_str(const std::vector<std::int64_t>& s) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

/// Throws unless tensor `name` exists with exactly this shape.
void expect_shape(const st::File& f, const std::string& name, const std::vector<std::int64_t>& shape) {
  if (!f.has(name)) throw std::runtime_error("missing tensor '" + name + "'");
  const auto& info = f.info(name);
  if (info.shape != shape)
    throw std::runtime_error("tensor '" + name + "': expected shape " + shape_str(shape) + ", got " +
                             info.shape_string());
}

Matrix float_tensor(const st::File& f, const std::string& name, const std::vector<std::int64_t>& shape) {
  expect_shape(f, name, shape);
  return f.to_float_matrix(name);
}

// ---------------------------------------------------------------------------
// Families

/// Families the SwiGluMoEBlock cannot express yet, with what they need.
const std::map<std::string, std::string>& unsupported_families() {
  static const std::map<std::string, std::string> m = {
      {"qwen2_moe", "a shared SwiGLU expert with a per-token sigmoid gate (shared_expert, shared_expert_gate)"},
      {"deepseek_v2",
       "ungated shared experts (shared_experts.*), group-limited greedy top-k (group score = max) "
       "and routed_scaling_factor without renormalization"},
      {"deepseek_v3",
       "sigmoid scoring, a selection-only bias (e_score_correction_bias), group-limited top-k "
       "(group score = sum of top-2), normalization with +1e-20 and ungated shared experts"},
      {"gpt_oss",
       "top-k on biased logits then softmax over the k, clamped SwiGLU experts (alpha, limit, up + 1, "
       "interleaved gate/up columns, transposed [E, d, 2f] layout) with expert biases"},
      {"llama4",
       "sigmoid of the top-k logits applied to the expert input (not the output), transposed "
       "[E, d, 2f] / [E, f, d] expert layouts and an ungated shared expert"},
      {"switch_transformers",
       "ReLU FFN experts and top-1 routing with an absolute expert capacity (token dropping, output 0 "
       "for dropped tokens)"},
      {"nllb_moe",
       "ReLU FFN experts with biases, GShard top-2 routing with capacity and renormalization after "
       "dropping, and eval output scaling by (1 - moe_token_dropout)"},
      {"phimoe", "sparsemixer routing (a thresholded softmax per choice, router_jitter_noise as threshold)"},
      {"expert_choice", "expert-choice routing (each expert selects its top-c tokens; capacity_factor)"},
  };
  return m;
}

bool block_family(const std::string& family) {
  static const std::set<std::string> s = {"mixtral", "mixtral_fused", "olmoe", "qwen3_moe",
                                          "jamba",   "granitemoe",    "dbrx"};
  return s.count(family) != 0;
}

struct Dims {
  Index T = 0, d = 0, E = 0, k = 0, f = 0;
};

Dims read_dims(const st::File& f) {
  Dims m;
  m.T = meta_index(f, "tokens");
  m.d = meta_index(f, "hidden_size");
  m.E = meta_index(f, "num_experts");
  m.k = meta_index(f, "top_k");
  m.f = meta_index(f, "intermediate_size");
  if (m.d < 1 || m.E < 1 || m.f < 1 || m.k < 1 || m.k > m.E)
    throw std::runtime_error("metadata: bad sizes (hidden_size, num_experts, top_k, intermediate_size)");
  return m;
}

/// The router weight [E, d] under whichever name the family uses
/// (`gate.weight` Mixtral/Qwen/OLMoE, `router.weight` Jamba, `router.layer.weight` Granite/DBRX).
Matrix load_router_weight(const st::File& f, const Dims& m) {
  static const char* const names[] = {"gate.weight", "router.weight", "router.layer.weight"};
  std::string found;
  for (const char* n : names)
    if (f.has(n)) {
      if (!found.empty())
        throw std::runtime_error("ambiguous router weight: both '" + found + "' and '" + n + "'");
      found = n;
    }
  if (found.empty()) throw std::runtime_error("no router weight (gate.weight / router.weight / router.layer.weight)");
  return float_tensor(f, found, {m.E, m.d});
}

/// SwiGLU experts in any of the layouts these families store:
///  - v5 fused `experts.gate_up_proj` [E, 2f, d] (gate rows first) + `experts.down_proj` [E, d, f]
///  - Granite `input_linear.weight` [E, 2f, d] (gate half first) + `output_linear.weight` [E, d, f]
///  - DBRX `experts.mlp.{w1, v1, w2}` each [E·f, d], down_e = w2_eᵀ
///  - per expert `experts.{e}.{w1, w3, w2}.weight` (Mixtral/PhiMoE) or
///    `experts.{e}.{gate_proj, up_proj, down_proj}.weight` (Qwen/OLMoE/Jamba/DeepSeek)
moekit::SwiGluExperts load_swiglu_experts(const st::File& f, const Dims& m) {
  const Index E = m.E, d = m.d, fi = m.f;
  auto fused = [&](const std::string& gu, const std::string& dn) {
    const Matrix gate_up = float_tensor(f, gu, {E, 2 * fi, d});
    const Matrix down = float_tensor(f, dn, {E, d, fi});
    return moekit::SwiGluExperts::from_gate_up(E, gate_up, down);
  };
  if (f.has("experts.gate_up_proj")) return fused("experts.gate_up_proj", "experts.down_proj");
  if (f.has("input_linear.weight")) return fused("input_linear.weight", "output_linear.weight");
  if (f.has("experts.mlp.w1")) {
    Matrix gate = float_tensor(f, "experts.mlp.w1", {E * fi, d});
    Matrix up = float_tensor(f, "experts.mlp.v1", {E * fi, d});
    const Matrix w2 = float_tensor(f, "experts.mlp.w2", {E * fi, d});
    Matrix down(E * d, fi);
    for (Index e = 0; e < E; ++e) down.middleRows(e * d, d) = w2.middleRows(e * fi, fi).transpose();
    return moekit::SwiGluExperts(E, std::move(gate), std::move(up), std::move(down));
  }
  std::string g, u, dn;
  if (f.has("experts.0.w1.weight")) {
    g = "w1", u = "w3", dn = "w2";
  } else if (f.has("experts.0.gate_proj.weight")) {
    g = "gate_proj", u = "up_proj", dn = "down_proj";
  } else {
    throw std::runtime_error("no recognised SwiGLU expert tensors");
  }
  Matrix gate(E * fi, d), up(E * fi, d), down(E * d, fi);
  for (Index e = 0; e < E; ++e) {
    const std::string p = "experts." + std::to_string(e) + ".";
    gate.middleRows(e * fi, fi) = float_tensor(f, p + g + ".weight", {fi, d});
    up.middleRows(e * fi, fi) = float_tensor(f, p + u + ".weight", {fi, d});
    down.middleRows(e * d, d) = float_tensor(f, p + dn + ".weight", {d, fi});
  }
  if (f.has("experts." + std::to_string(E) + "." + g + ".weight"))
    throw std::runtime_error("file holds more experts than num_experts = " + std::to_string(E));
  return moekit::SwiGluExperts(E, std::move(gate), std::move(up), std::move(down));
}

/// What building a block gave: either a block, or the reason it cannot be built.
struct Built {
  std::optional<moekit::SwiGluMoEBlock> block;
  std::string skip_reason;
};

Built build_block(const st::File& f, const std::string& family, const Dims& m) {
  Built b;
  const std::string mode = f.meta_or("mode", "eval");
  if (mode != "eval") {
    b.skip_reason = "mode '" + mode + "' (only eval semantics are implemented)";
    return b;
  }
  const std::string act = f.meta_or("hidden_act", f.meta_or("ffn_act_fn", "silu"));
  if (act != "silu") {
    b.skip_reason = "activation '" + act + "' (SwiGluExperts implements silu only)";
    return b;
  }

  // Only the builder calls (with_top_k / with_renormalize / with_scaling_factor)
  // are used, so the harness does not depend on how RouterOptions stores them.
  bool renormalize = true;
  if (family == "mixtral" || family == "mixtral_fused") {
    renormalize = true;  // unconditional in Mixtral
  } else if (family == "olmoe" || family == "qwen3_moe") {
    renormalize = meta_bool(f, "norm_topk_prob").value_or(false);  // HF default False
  } else if (family == "jamba") {
    renormalize = false;
  } else if (family == "granitemoe") {
    // softmax over the k selected logits == softmax over all E, then renormalized.
    renormalize = true;
  } else if (family == "dbrx") {
    const auto q = meta_double(f, "moe_normalize_expert_weights");
    if (!q) {
      renormalize = false;
    } else if (*q == 1.0) {
      renormalize = true;  // L1 norm of positive weights = their sum
    } else {
      b.skip_reason = "renormalization by the p-norm with p = " + f.meta("moe_normalize_expert_weights") +
                      " (moe_normalize_expert_weights; only p = 1 or none is supported)";
      return b;
    }
  }
  float scaling = 1.0f;
  if (const auto s = meta_double(f, "routed_scaling_factor")) scaling = static_cast<float>(*s);
  moekit::RouterOptions opt;
  opt.with_top_k(m.k).with_renormalize(renormalize).with_scaling_factor(scaling);

  moekit::Router<> router(load_router_weight(f, m), opt);
  b.block.emplace(std::move(router), load_swiglu_experts(f, m));
  return b;
}

// ---------------------------------------------------------------------------
// Comparison helpers

struct Diff {
  double max_abs = 0;
  double max_golden = 0;
  Index row = -1, col = -1;
};

template <class A, class B>
Diff diff(const A& got, const B& golden) {
  Diff r;
  for (Index i = 0; i < golden.rows(); ++i)
    for (Index j = 0; j < golden.cols(); ++j) {
      const double g = static_cast<double>(golden(i, j));
      const double e = std::abs(static_cast<double>(got(i, j)) - g);
      r.max_golden = std::max(r.max_golden, std::abs(g));
      if (!(e <= r.max_abs)) {  // also catches NaN
        r.max_abs = std::isnan(e) ? INFINITY : e;
        r.row = i, r.col = j;
      }
    }
  return r;
}

double rel_tol(const Diff& d) { return 1e-5 * std::max(1.0, d.max_golden); }

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

std::string ids_mismatch(const IdMatrix& got, const IdMatrix& golden) {
  std::ostringstream os;
  int shown = 0;
  for (Index t = 0; t < golden.rows(); ++t)
    if (!(got.row(t) == golden.row(t))) {
      if (shown++ == 8) {
        os << "  ...\n";
        break;
      }
      os << "  token " << t << ": got [" << got.row(t) << "], golden [" << golden.row(t) << "]\n";
    }
  return os.str();
}

/// Mixtral-form load_balancing_loss_func of one layer's logits, no mask (SEMANTICS.md §A),
/// in double with the lower-index tie rule.
double mixtral_aux_loss(const Matrix& logits, Index k) {
  const Index T = logits.rows(), E = logits.cols();
  std::vector<double> prob_mean(static_cast<std::size_t>(E), 0.0);
  std::vector<double> tokens(static_cast<std::size_t>(k * E), 0.0);  // [k, E]
  std::vector<double> p(static_cast<std::size_t>(E));
  std::vector<Index> order(static_cast<std::size_t>(E));
  for (Index t = 0; t < T; ++t) {
    double mx = -INFINITY, sum = 0;
    for (Index e = 0; e < E; ++e) mx = std::max(mx, static_cast<double>(logits(t, e)));
    for (Index e = 0; e < E; ++e) sum += (p[static_cast<std::size_t>(e)] = std::exp(logits(t, e) - mx));
    for (auto& v : p) v /= sum;
    for (Index e = 0; e < E; ++e) order[static_cast<std::size_t>(e)] = e;
    std::stable_sort(order.begin(), order.end(),
                     [&](Index a, Index b) { return p[static_cast<std::size_t>(a)] > p[static_cast<std::size_t>(b)]; });
    for (Index j = 0; j < k; ++j) tokens[static_cast<std::size_t>(j * E + order[static_cast<std::size_t>(j)])] += 1.0;
    for (Index e = 0; e < E; ++e) prob_mean[static_cast<std::size_t>(e)] += p[static_cast<std::size_t>(e)];
  }
  double loss = 0;
  for (Index j = 0; j < k; ++j)
    for (Index e = 0; e < E; ++e)
      loss += (tokens[static_cast<std::size_t>(j * E + e)] / static_cast<double>(T)) *
              (prob_mean[static_cast<std::size_t>(e)] / static_cast<double>(T));
  return static_cast<double>(E) * loss;
}

// ---------------------------------------------------------------------------
// The suite

TEST(ConformanceDirectory, Found) {
  const Discovery& d = discovery();
  const std::string dir = conformance_dir();
  const bool req = require_conformance();
  if (!d.dir_exists) {
    if (req)
      FAIL() << "conformance directory '" << dir
             << "' does not exist, and MOEKIT_REQUIRE_CONFORMANCE is ON "
                "(set MOEKIT_CONFORMANCE_DIR at configure time or in the environment)";
    GTEST_SKIP() << "conformance directory '" << dir
                 << "' not found: no golden cases run (set MOEKIT_CONFORMANCE_DIR; "
                    "MOEKIT_REQUIRE_CONFORMANCE=ON makes this a failure)";
  }
  EXPECT_TRUE(d.error.empty()) << d.error;
  if (d.cases.empty()) {
    if (req) FAIL() << "no *.safetensors case under '" << dir << "' (MOEKIT_REQUIRE_CONFORMANCE is ON)";
    GTEST_SKIP() << "no *.safetensors case under '" << dir << "'";
  }
  std::printf("[ conformance ] %zu golden cases under %s\n", d.cases.size(), dir.c_str());
  RecordProperty("conformance_dir", dir);
  RecordProperty("cases", static_cast<int>(d.cases.size()));
}

class ConformanceCase : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(ConformanceCase, Run) {
  const GoldenCase& c = GetParam();
  RecordProperty("golden_file", c.rel);

  std::optional<st::File> file;
  try {
    file.emplace(st::File::load(c.path));
  } catch (const std::exception& e) {
    FAIL() << c.rel << ": " << e.what();
  }
  const st::File& f = *file;

  std::string family = f.meta_or("family", "");
  if (family.empty()) family = fs::path(c.path).parent_path().filename().string();
  RecordProperty("family", family);

  if (!block_family(family)) {
    const auto& un = unsupported_families();
    const auto it = un.find(family);
    if (it != un.end()) GTEST_SKIP() << "family " << family << " needs " << it->second;
    FAIL() << c.rel << ": unknown family '" << family
           << "': no harness for it (add it to tests/conformance/conformance_test.cpp)";
  }

  Dims m;
  Matrix x, golden_logits, golden_weights, golden_out;
  IdMatrix golden_ids;
  Built built;
  try {
    m = read_dims(f);
    x = float_tensor(f, "input", {m.T, m.d});
    golden_out = float_tensor(f, "output", {m.T, m.d});
    golden_logits = float_tensor(f, "router_logits", {m.T, m.E});
    golden_weights = float_tensor(f, "topk_weights", {m.T, m.k});
    expect_shape(f, "topk_ids", {m.T, m.k});
    golden_ids = f.to_int_matrix("topk_ids");
    built = build_block(f, family, m);
  } catch (const std::exception& e) {
    FAIL() << c.rel << ": " << e.what();
  }
  if (!built.block) GTEST_SKIP() << "family " << family << " needs " << built.skip_reason;
  moekit::SwiGluMoEBlock& block = *built.block;

  Matrix y;
  try {
    y = block.forward(x);
  } catch (const std::exception& e) {
    FAIL() << c.rel << ": block.forward threw: " << e.what();
  }
  const Matrix& logits = block.last_logits();
  const moekit::RoutingPlan& plan = block.last_plan();
  ASSERT_EQ(logits.rows(), m.T);
  ASSERT_EQ(logits.cols(), m.E);
  ASSERT_EQ(plan.ids.rows(), m.T);
  ASSERT_EQ(plan.ids.cols(), m.k);

  std::ostringstream report;
  report << "[ conformance ] " << c.name << ":";

  const Diff dl = diff(logits, golden_logits);
  EXPECT_LE(dl.max_abs, rel_tol(dl)) << "router_logits differ, max at [" << dl.row << ", " << dl.col << "]";
  report << " logits " << fmt(dl.max_abs);
  RecordProperty("max_err_logits", fmt(dl.max_abs));

  const bool ids_ok = plan.ids == golden_ids;
  EXPECT_TRUE(ids_ok) << "topk_ids differ:\n" << ids_mismatch(plan.ids, golden_ids);
  report << " ids " << (ids_ok ? "exact" : "MISMATCH");

  const Diff dw = diff(plan.weights, golden_weights);
  EXPECT_LE(dw.max_abs, 1e-6) << "topk_weights differ, max at [" << dw.row << ", " << dw.col << "]";
  report << " weights " << fmt(dw.max_abs);
  RecordProperty("max_err_topk_weights", fmt(dw.max_abs));

  const Diff dy = diff(y, golden_out);
  EXPECT_LE(dy.max_abs, rel_tol(dy)) << "output differs, max at [" << dy.row << ", " << dy.col << "]";
  report << " output " << fmt(dy.max_abs) << " (tol " << fmt(rel_tol(dy)) << ")";
  RecordProperty("max_err_output", fmt(dy.max_abs));

  // The double-precision oracle on the same block.
  moekit::RoutingPlan ref_plan;
  Matrix ref_y;
  try {
    ref_y = moekit::reference::forward(block, x, &ref_plan);
  } catch (const std::exception& e) {
    FAIL() << c.rel << ": reference::forward threw: " << e.what();
  }
  const Diff dr = diff(ref_y, golden_out);
  EXPECT_LE(dr.max_abs, rel_tol(dr)) << "reference output differs, max at [" << dr.row << ", " << dr.col
                                     << "]";
  EXPECT_TRUE(ref_plan.ids == golden_ids) << "reference topk_ids differ:\n"
                                          << ids_mismatch(ref_plan.ids, golden_ids);
  const Diff drw = diff(ref_plan.weights, golden_weights);
  EXPECT_LE(drw.max_abs, 1e-6) << "reference topk_weights differ, max at [" << drw.row << ", " << drw.col
                               << "]";
  report << " | reference output " << fmt(dr.max_abs) << " weights " << fmt(drw.max_abs);
  RecordProperty("max_err_reference_output", fmt(dr.max_abs));

  // Mixtral-form aux loss from the block's logits (test-side formula).
  if (f.has("aux_loss")) {
    const Matrix golden_aux = float_tensor(f, "aux_loss", {1});
    const double aux = mixtral_aux_loss(logits, m.k);
    const double err = std::abs(aux - static_cast<double>(golden_aux(0, 0)));
    const double tol = 1e-5 * std::max(1.0, std::abs(static_cast<double>(golden_aux(0, 0))));
    EXPECT_LE(err, tol) << "aux_loss: computed " << aux << ", golden " << golden_aux(0, 0);
    report << " | aux_loss " << fmt(err);
    RecordProperty("max_err_aux_loss", fmt(err));
  }
  std::printf("%s\n", report.str().c_str());
}

INSTANTIATE_TEST_SUITE_P(Golden, ConformanceCase, ::testing::ValuesIn(golden_cases()),
                         [](const ::testing::TestParamInfo<GoldenCase>& p) { return p.param.name; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ConformanceCase);

}  // namespace
