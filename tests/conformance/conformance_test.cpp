// SPDX-License-Identifier: MIT
// Golden-case conformance suite.
//
// Every `*.safetensors` file under the conformance directory (found at run
// time, recursively) becomes one test, named after its path relative to the
// directory: `mixtral/t7_e8_k2.safetensors` -> `Golden/ConformanceCase.Run/mixtral_t7_e8_k2`.
// New cases of a family are therefore picked up without touching this file.
//
// Each case is checked in two stages (SEMANTICS.md gives every family's rules):
//
//  1. Routing. The family's router is built from the file's metadata and
//     weights (moekit::Router<Scoring, Selection> with the family's options,
//     SparseMixerRouter for Phi-MoE, ExpertChoiceRouter for expert choice) and
//     run on `input`. Checked against the golden tensors:
//       router_logits   max abs err <= 1e-5 * max(1, max|golden|)
//       topk_ids        exactly, rank order (DeepSeek too: the files store rank order)
//       topk_weights    max abs err <= 1e-6, times routed_scaling_factor where the
//                       weights are multiplied by it (DeepSeek-V2/V3)
//       dropped         exactly (Switch [T, 1], NLLB [T, 2]; from RoutingPlan::dropped)
//       aux_loss        moekit::load_balancing_loss(raw logits, k)
//       z_loss, lb_loss moekit::router_z_loss, moekit::switch_load_balancing_loss (Switch)
//       ec_token_ids / ec_weights   ExpertChoiceRouter::selection() (exact / 1e-6)
//     For Router<...> the double-precision oracle moekit::reference::route is
//     held to the same ids / weights / dropped checks.
//  2. Output. The routed experts (and shared experts) are built, the block
//     moekit::MoEBlock<RouterT, Experts, WeightedSum> runs on `input`, and its
//     output and that of moekit::reference::forward are compared with `output`
//     (max abs err <= 1e-5 * max(1, max|golden|)). The block must route exactly
//     as router.route did.
//
// When stage 2 cannot be built (an activation or option the harness has no
// expert kind for), the test is reported SKIPPED with the reason, but only
// after stage 1 ran: a routing failure is a failure (GoogleTest and CTest
// report a test with a failed EXPECT followed by GTEST_SKIP as FAILED).
// A file of an unknown family fails.
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
#include <type_traits>
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
using moekit::Vector;

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

Vector float_vector(const st::File& f, const std::string& name, std::int64_t n) {
  expect_shape(f, name, {n});
  return f.to_float_vector(name);
}

// ---------------------------------------------------------------------------
// Families

bool known_family(const std::string& family) {
  static const std::set<std::string> s = {
      "mixtral", "mixtral_fused", "qwen2_moe", "qwen3_moe", "olmoe",    "deepseek_v2",
      "deepseek_v3", "gpt_oss",  "llama4",    "switch_transformers", "granitemoe",
      "nllb_moe", "phimoe",      "dbrx",      "jamba",               "expert_choice"};
  return s.count(family) != 0;
}

struct Dims {
  Index T = 0, d = 0, E = 0, k = 0, f = 0;
};

/// k = 0 is allowed only where the family has no top-k (expert choice).
Dims read_dims(const st::File& f, bool topk_family) {
  Dims m;
  m.T = meta_index(f, "tokens");
  m.d = meta_index(f, "hidden_size");
  m.E = meta_index(f, "num_experts");
  m.k = meta_index(f, "top_k");
  m.f = meta_index(f, "intermediate_size");
  if (m.d < 1 || m.E < 1 || m.f < 1 || m.k > m.E || (topk_family && m.k < 1))
    throw std::runtime_error("metadata: bad sizes (hidden_size, num_experts, top_k, intermediate_size)");
  return m;
}

/// The router weight [E, d] under whichever name the family uses: `gate.weight`
/// (Mixtral, Qwen, OLMoE, DeepSeek, Phi-MoE), `router.weight` (Jamba, gpt-oss,
/// Llama-4), `router.layer.weight` (Granite, DBRX), `router.classifier.weight`
/// (Switch, NLLB).
Matrix load_router_weight(const st::File& f, const Dims& m, std::string* name_out = nullptr) {
  static const char* const names[] = {"gate.weight", "router.weight", "router.layer.weight",
                                      "router.classifier.weight"};
  std::string found;
  for (const char* n : names)
    if (f.has(n)) {
      if (!found.empty())
        throw std::runtime_error("ambiguous router weight: both '" + found + "' and '" + n + "'");
      found = n;
    }
  if (found.empty())
    throw std::runtime_error(
        "no router weight (gate.weight / router.weight / router.layer.weight / router.classifier.weight)");
  if (name_out) *name_out = found;
  return float_tensor(f, found, {m.E, m.d});
}

/// The router bias [E] beside the router weight (`<router>.bias`), or empty.
Vector load_router_bias(const st::File& f, const Dims& m, const std::string& weight_name) {
  const std::string name = weight_name.substr(0, weight_name.size() - std::string("weight").size()) + "bias";
  return f.has(name) ? float_vector(f, name, m.E) : Vector();
}

/// SwiGLU experts in any of the layouts these families store:
///  - v5 fused `experts.gate_up_proj` [E, 2f, d] (gate rows first) + `experts.down_proj` [E, d, f]
///  - Granite `input_linear.weight` [E, 2f, d] (gate half first) + `output_linear.weight` [E, d, f]
///  - DBRX `experts.mlp.{w1, v1, w2}` each [E·f, d], down_e = w2_eᵀ
///  - per expert `experts.{e}.{w1, w3, w2}.weight` (Mixtral/PhiMoE) or
///    `experts.{e}.{gate_proj, up_proj, down_proj}.weight` (Qwen/OLMoE/Jamba/DeepSeek/expert choice)
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

/// Plain two-layer experts `experts.expert_{e}.{in, out}.weight` [f, d] / [d, f]
/// (+ `.bias` [f] / [d] when `biases`): Switch (wi / wo), NLLB (fc1 / fc2).
moekit::ReluExperts load_relu_experts(const st::File& f, const Dims& m, const std::string& in,
                                      const std::string& out, bool biases) {
  const Index E = m.E, d = m.d, fi = m.f;
  Matrix w_in(E * fi, d), w_out(E * d, fi), b_in, b_out;
  if (biases) b_in.resize(E, fi), b_out.resize(E, d);
  for (Index e = 0; e < E; ++e) {
    const std::string p = "experts.expert_" + std::to_string(e) + ".";
    w_in.middleRows(e * fi, fi) = float_tensor(f, p + in + ".weight", {fi, d});
    w_out.middleRows(e * d, d) = float_tensor(f, p + out + ".weight", {d, fi});
    if (biases) {
      b_in.row(e) = float_vector(f, p + in + ".bias", fi).transpose();
      b_out.row(e) = float_vector(f, p + out + ".bias", d).transpose();
    }
  }
  if (f.has("experts.expert_" + std::to_string(E) + "." + in + ".weight"))
    throw std::runtime_error("file holds more experts than num_experts = " + std::to_string(E));
  moekit::ReluExperts ex(E, std::move(w_in), std::move(w_out));
  if (biases) ex.set_biases(std::move(b_in), std::move(b_out));
  return ex;
}

using Shared = moekit::SharedExperts<moekit::SwiGluExperts>;

/// One always-on SwiGLU MLP `<prefix>{gate,up,down}_proj.weight` ([fs, d], [fs, d], [d, fs]),
/// with an optional sigmoid gate [1, d]. fs is read from the tensors and, when
/// `expected_fs` > 0, must equal it.
Shared load_shared_expert(const st::File& f, const Dims& m, const std::string& prefix, Index expected_fs,
                          const std::string& gate_name = "") {
  const std::string g = prefix + "gate_proj.weight";
  if (!f.has(g)) throw std::runtime_error("missing tensor '" + g + "'");
  const auto& shape = f.info(g).shape;
  if (shape.size() != 2 || shape[1] != m.d || shape[0] < 1)
    throw std::runtime_error("tensor '" + g + "': expected shape [fs, " + std::to_string(m.d) + "], got " +
                             f.info(g).shape_string());
  const Index fs = static_cast<Index>(shape[0]);
  if (expected_fs > 0 && fs != expected_fs)
    throw std::runtime_error("tensor '" + g + "': intermediate size " + std::to_string(fs) +
                             " differs from the metadata's " + std::to_string(expected_fs));
  moekit::SwiGluExperts bank(1, float_tensor(f, g, {fs, m.d}), float_tensor(f, prefix + "up_proj.weight", {fs, m.d}),
                             float_tensor(f, prefix + "down_proj.weight", {m.d, fs}));
  Vector gate;
  if (!gate_name.empty()) {
    expect_shape(f, gate_name, {1, m.d});
    gate = f.to_float_vector(gate_name);
  }
  return Shared(std::move(bank), std::move(gate));
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
double rel_tol(double golden) { return 1e-5 * std::max(1.0, std::abs(golden)); }

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
      os << "  row " << t << ": got [" << got.row(t) << "], golden [" << golden.row(t) << "]\n";
    }
  return os.str();
}

// ---------------------------------------------------------------------------
// One case: the golden tensors and the checks

struct Case {
  const st::File* file = nullptr;
  std::string rel, family;
  Dims m;
  Matrix x, golden_out, golden_logits;
  bool has_topk = false;  // topk_ids / topk_weights present (every family but expert choice)
  IdMatrix golden_ids;
  Matrix golden_weights;
  /// topk_weights tolerance (absolute): 1e-6, times routed_scaling_factor (DeepSeek).
  double weight_tol = 1e-6;
  /// NLLB: the golden weight of a dropped slot is 0 (the router may keep it, the
  /// combine ignores the slot either way).
  bool dropped_weight_is_zero = false;
  std::ostringstream report;
};

void check_logits(Case& c, const Matrix& logits) {
  if (logits.rows() != c.m.T || logits.cols() != c.m.E) {
    ADD_FAILURE() << "router logits: shape [" << logits.rows() << ", " << logits.cols() << "], expected ["
                  << c.m.T << ", " << c.m.E << "]";
    return;
  }
  const Diff dl = diff(logits, c.golden_logits);
  EXPECT_LE(dl.max_abs, rel_tol(dl)) << "router_logits differ, max at [" << dl.row << ", " << dl.col << "]";
  c.report << " logits " << fmt(dl.max_abs);
  ::testing::Test::RecordProperty("max_err_logits", fmt(dl.max_abs));
}

/// ids (exact), weights and, where the file has them, the dropped flags of a plan.
/// A slot a capacity limit emptied is compared by the id it dropped (the golden
/// files store the chosen expert for dropped assignments too).
void check_plan(Case& c, const moekit::RoutingPlan& plan, const std::string& who) {
  const Index T = c.m.T, k = c.m.k;
  if (plan.ids.rows() != T || plan.ids.cols() != k || plan.weights.rows() != T || plan.weights.cols() != k) {
    ADD_FAILURE() << who << ": plan shape [" << plan.ids.rows() << ", " << plan.ids.cols() << "], expected [" << T
                  << ", " << k << "]";
    return;
  }
  const bool has_dropped = plan.dropped.size() != 0;
  if (has_dropped && (plan.dropped.rows() != T || plan.dropped.cols() != k)) {
    ADD_FAILURE() << who << ": plan.dropped shape [" << plan.dropped.rows() << ", " << plan.dropped.cols() << "]";
    return;
  }
  IdMatrix ids = plan.ids, dropped = IdMatrix::Zero(T, k);
  Matrix weights = plan.weights;
  for (Index t = 0; t < T; ++t)
    for (Index j = 0; j < k; ++j)
      if (has_dropped && plan.dropped(t, j) != moekit::RoutingPlan::kNoExpert) {
        EXPECT_EQ(plan.ids(t, j), moekit::RoutingPlan::kNoExpert) << who << ": dropped slot [" << t << ", " << j
                                                                  << "] still names an expert";
        ids(t, j) = plan.dropped(t, j);
        dropped(t, j) = 1;
        if (c.dropped_weight_is_zero) weights(t, j) = 0.0f;
      }
  const bool ids_ok = ids == c.golden_ids;
  EXPECT_TRUE(ids_ok) << who << ": topk_ids differ:\n" << ids_mismatch(ids, c.golden_ids);
  const Diff dw = diff(weights, c.golden_weights);
  EXPECT_LE(dw.max_abs, c.weight_tol) << who << ": topk_weights differ, max at [" << dw.row << ", " << dw.col
                                      << "]: got " << weights(std::max<Index>(dw.row, 0), std::max<Index>(dw.col, 0))
                                      << ", golden "
                                      << c.golden_weights(std::max<Index>(dw.row, 0), std::max<Index>(dw.col, 0));
  c.report << " | " << who << ": ids " << (ids_ok ? "exact" : "MISMATCH") << " weights " << fmt(dw.max_abs);
  if (c.weight_tol != 1e-6) c.report << " (tol " << fmt(c.weight_tol) << ")";
  if (who == "router") ::testing::Test::RecordProperty("max_err_topk_weights", fmt(dw.max_abs));
  if (c.file->has("dropped")) {
    const st::File& f = *c.file;
    expect_shape(f, "dropped", {T, k});
    const IdMatrix golden = f.to_int_matrix("dropped");
    EXPECT_TRUE(has_dropped) << who << ": the file has `dropped` but no capacity limit ran (plan.dropped empty)";
    const bool ok = dropped == golden;
    EXPECT_TRUE(ok) << who << ": dropped differs:\n" << ids_mismatch(dropped, golden);
    c.report << " dropped " << (ok ? "exact" : "MISMATCH") << " (" << dropped.sum() << ")";
  }
}

/// aux_loss (Mixtral form, raw logits), z_loss and lb_loss (Switch form).
void check_losses(Case& c, const Matrix& logits, const moekit::RoutingPlan& plan) {
  const st::File& f = *c.file;
  bool first = true;
  auto check = [&](const char* name, double got) {
    const Matrix g = float_tensor(f, name, {1});
    const double golden = g(0, 0), err = std::abs(got - golden);
    EXPECT_LE(err, rel_tol(golden)) << name << ": computed " << got << ", golden " << golden;
    c.report << (first ? " | " : " ") << name << " " << fmt(err);
    first = false;
    ::testing::Test::RecordProperty(std::string("max_err_") + name, fmt(err));
  };
  if (f.has("aux_loss")) {
    // The golden aux_loss is HF's load_balancing_loss_func of this block's raw
    // logits (README, SEMANTICS §A) for every family, DBRX included: HF DBRX
    // itself feeds the softmax probabilities in (softmax applied twice), which
    // gives a different number; the files do not store that one (checked: for
    // dbrx/t7_e16_k4_l1 the raw-logit loss is 4.93197 = golden, the double
    // softmax one 4.06217). It is reported as `aux_loss(HF DBRX probs)`.
    check("aux_loss", moekit::load_balancing_loss(logits, c.m.k));
    if (c.family == "dbrx") {
      Matrix probs(logits.rows(), logits.cols());
      for (Index t = 0; t < logits.rows(); ++t)
        moekit::SoftmaxScoring::apply(logits.row(t).data(), probs.row(t).data(), logits.cols());
      c.report << " (aux_loss(HF DBRX probs) = " << fmt(moekit::load_balancing_loss(probs, c.m.k)) << ", not stored)";
    }
  }
  if (f.has("z_loss")) check("z_loss", moekit::router_z_loss(logits));
  if (f.has("lb_loss")) {
    if (c.family == "switch_transformers")
      check("lb_loss", moekit::switch_load_balancing_loss(logits, plan));
    else
      ADD_FAILURE() << "lb_loss: no harness for the " << c.family << " form of the balance loss";
  }
}

/// Expert choice: the expert-major selection [E, C] against ec_token_ids / ec_weights.
void check_expert_choice(Case& c, const moekit::ExpertChoiceRouter& router) {
  const st::File& f = *c.file;
  if (!f.has("ec_token_ids")) throw std::runtime_error("missing tensor 'ec_token_ids'");
  const auto& shape = f.info("ec_token_ids").shape;
  if (shape.size() != 2 || shape[0] != c.m.E)
    throw std::runtime_error("tensor 'ec_token_ids': expected shape [E, C], got " +
                             f.info("ec_token_ids").shape_string());
  const Index C = static_cast<Index>(shape[1]);
  const IdMatrix golden_ids = f.to_int_matrix("ec_token_ids");
  const Matrix golden_w = float_tensor(f, "ec_weights", {c.m.E, C});
  const auto& sel = router.selection();
  EXPECT_EQ(router.capacity_for(c.m.T), C) << "expert-choice capacity C (T · capacity_factor / E)";
  if (sel.token_ids.rows() != c.m.E || sel.token_ids.cols() != C) {
    ADD_FAILURE() << "expert-choice selection shape [" << sel.token_ids.rows() << ", " << sel.token_ids.cols()
                  << "], expected [" << c.m.E << ", " << C << "]";
    return;
  }
  const bool ok = sel.token_ids == golden_ids;
  EXPECT_TRUE(ok) << "ec_token_ids differ:\n" << ids_mismatch(sel.token_ids, golden_ids);
  const Diff dw = diff(sel.weights, golden_w);
  EXPECT_LE(dw.max_abs, 1e-6) << "ec_weights differ, max at [" << dw.row << ", " << dw.col << "]";
  c.report << " | ec_token_ids " << (ok ? "exact" : "MISMATCH") << " ec_weights " << fmt(dw.max_abs) << " (C = " << C
           << ")";
  ::testing::Test::RecordProperty("max_err_ec_weights", fmt(dw.max_abs));
}

template <class R>
struct is_generic_router : std::false_type {};
template <class S, class L>
struct is_generic_router<moekit::Router<S, L>> : std::true_type {};

void print_report(const Case& c) { std::printf("[ conformance ] %s\n", c.report.str().c_str()); }

/// Stage 1 (routing) with `router`, then stage 2 (output) with `experts`, or a
/// skip with `output_skip` when experts is empty.
template <class RouterT, class ExpertsT>
void run_case(Case& c, RouterT router, std::optional<ExpertsT> experts, const std::string& output_skip,
              std::optional<Shared> shared = std::nullopt,
              moekit::WeightedSum combine = moekit::WeightedSum()) {
  // Stage 1: routing.
  moekit::RoutingPlan plan;
  Matrix logits;
  try {
    router.route(c.x, plan, logits);
  } catch (const std::exception& e) {
    FAIL() << c.rel << ": router.route threw: " << e.what();
  }
  c.report << " routing:";
  check_logits(c, logits);
  try {
    if (c.has_topk) check_plan(c, plan, "router");
    if constexpr (std::is_same_v<RouterT, moekit::ExpertChoiceRouter>) check_expert_choice(c, router);
    if constexpr (is_generic_router<RouterT>::value) check_plan(c, moekit::reference::route(router, c.x), "reference");
    check_losses(c, logits, plan);
  } catch (const std::exception& e) {
    ADD_FAILURE() << c.rel << ": routing checks threw: " << e.what();
  }
  const bool routing_ok = !::testing::Test::HasFailure();
  c.report << " => routing " << (routing_ok ? "PASS" : "FAIL");

  // Stage 2: output.
  if (!experts) {
    c.report << " | output SKIPPED";
    print_report(c);
    GTEST_SKIP() << "output check: " << output_skip << " (routing was checked"
                 << (routing_ok ? " and passed" : "") << ")";
  }
  using Block = moekit::MoEBlock<RouterT, ExpertsT, moekit::WeightedSum>;
  std::optional<Block> block;
  Matrix y;
  try {
    block.emplace(std::move(router), std::move(*experts), combine);
    if (shared) block->set_shared_experts(std::move(*shared));
    y = block->forward(c.x);
  } catch (const std::exception& e) {
    print_report(c);
    FAIL() << c.rel << ": building or running the block threw: " << e.what();
  }
  EXPECT_TRUE(block->last_plan().ids == plan.ids && block->last_plan().weights == plan.weights)
      << "the block routed differently from router.route";
  const Diff dy = diff(y, c.golden_out);
  EXPECT_LE(dy.max_abs, rel_tol(dy)) << "output differs, max at [" << dy.row << ", " << dy.col << "]";
  c.report << " | output " << fmt(dy.max_abs) << " (tol " << fmt(rel_tol(dy)) << ")";
  ::testing::Test::RecordProperty("max_err_output", fmt(dy.max_abs));

  Matrix ref_y;
  try {
    ref_y = moekit::reference::forward(*block, c.x);
  } catch (const std::exception& e) {
    print_report(c);
    FAIL() << c.rel << ": reference::forward threw: " << e.what();
  }
  const Diff dr = diff(ref_y, c.golden_out);
  EXPECT_LE(dr.max_abs, rel_tol(dr)) << "reference output differs, max at [" << dr.row << ", " << dr.col << "]";
  c.report << " reference " << fmt(dr.max_abs);
  ::testing::Test::RecordProperty("max_err_reference_output", fmt(dr.max_abs));
  print_report(c);
}

/// Why the gated experts of a family cannot be built, or "" (SwiGLU: silu only).
std::string gated_activation_skip(const st::File& f) {
  const std::string act = f.meta_or("hidden_act", f.meta_or("ffn_act_fn", "silu"));
  return act == "silu" ? "" : "activation '" + act + "' (the harness builds SwiGLU experts, silu only)";
}

/// Builds the family's router (and experts) from the file and runs the case.
void run_family(Case& c) {
  const st::File& f = *c.file;
  const Dims& m = c.m;
  const std::string& fam = c.family;
  using moekit::CapacityLimit;
  using moekit::GroupedTopKSelector;
  using moekit::GroupScore;
  using moekit::MaskFill;
  using moekit::Normalization;
  using moekit::Router;
  using moekit::RouterOptions;
  using moekit::WeightSource;
  std::string router_name;
  const Matrix W = load_router_weight(f, m, &router_name);
  RouterOptions opt;
  opt.with_top_k(m.k);

  auto swiglu_or_skip = [&](std::string& skip) -> std::optional<moekit::SwiGluExperts> {
    skip = gated_activation_skip(f);
    if (!skip.empty()) return std::nullopt;
    return load_swiglu_experts(f, m);
  };
  std::string skip;

  // Softmax over all E, top-k, then the family's renormalization.
  if (fam == "mixtral" || fam == "mixtral_fused" || fam == "olmoe" || fam == "qwen3_moe" || fam == "qwen2_moe" ||
      fam == "jamba" || fam == "dbrx") {
    if (fam == "mixtral" || fam == "mixtral_fused") {
      opt.with_renormalize(true);  // unconditional in Mixtral
    } else if (fam == "jamba") {
      opt.with_renormalize(false);
    } else if (fam == "dbrx") {
      // w / ‖w‖_q with q = moe_normalize_expert_weights; none when null.
      if (const auto q = meta_double(f, "moe_normalize_expert_weights"))
        opt.with_normalization(Normalization::p_norm, static_cast<float>(*q));
      else
        opt.with_normalization(Normalization::none);
    } else {
      opt.with_renormalize(meta_bool(f, "norm_topk_prob").value_or(false));  // HF default False
    }
    auto experts = swiglu_or_skip(skip);
    std::optional<Shared> shared;
    if (fam == "qwen2_moe" && experts) {
      const Index fs = f.has_meta("shared_expert_intermediate_size") && !is_null(f.meta("shared_expert_intermediate_size"))
                           ? meta_index(f, "shared_expert_intermediate_size")
                           : 0;
      shared = load_shared_expert(f, m, "shared_expert.", fs, "shared_expert_gate.weight");
    }
    return run_case(c, Router<>(W, opt), std::move(experts), skip, std::move(shared));
  }

  // Top-k on the raw logits, softmax over the k selected (== renormalized softmax, HF rounding).
  if (fam == "granitemoe") {
    opt.with_weight_source(WeightSource::softmax_of_selected).with_normalization(Normalization::none);
    return run_case(c, Router<moekit::LogitScoring>(W, opt), swiglu_or_skip(skip), skip);
  }

  if (fam == "deepseek_v2" || fam == "deepseek_v3") {
    const double rsf = meta_double(f, "routed_scaling_factor").value_or(1.0);
    opt.with_scaling_factor(static_cast<float>(rsf));
    // The weights are multiplied by routed_scaling_factor: so is their tolerance.
    c.weight_tol = 1e-6 * std::max(1.0, std::abs(rsf));
    auto experts = swiglu_or_skip(skip);
    std::optional<Shared> shared;
    const Index n_shared = f.has_meta("n_shared_experts") && !is_null(f.meta("n_shared_experts"))
                               ? meta_index(f, "n_shared_experts")
                               : 0;
    if (experts && n_shared > 0) shared = load_shared_expert(f, m, "shared_experts.", m.f * n_shared);
    const Index G = f.has_meta("n_group") && !is_null(f.meta("n_group")) ? meta_index(f, "n_group") : 1;
    const Index TG = f.has_meta("topk_group") && !is_null(f.meta("topk_group")) ? meta_index(f, "topk_group") : 1;
    // Masked groups are filled with 0.0 as HF does (MaskFill::zero); the golden
    // cases avoid the inputs where this differs from DeepSeek's -inf.
    if (fam == "deepseek_v2") {
      // softmax, top-k, no renormalization, times routed_scaling_factor.
      opt.with_normalization(Normalization::none);
      const std::string method = f.meta_or("topk_method", "greedy");
      if (method == "greedy")
        return run_case(c, Router<>(W, opt), std::move(experts), skip, std::move(shared));
      if (method == "group_limited_greedy")
        return run_case(c,
                        Router<moekit::SoftmaxScoring, GroupedTopKSelector>(
                            W, opt, Vector(), GroupedTopKSelector(G, TG, GroupScore::max, MaskFill::zero)),
                        std::move(experts), skip, std::move(shared));
      FAIL() << c.rel << ": unknown DeepSeek-V2 topk_method '" << method << "'";
    }
    // V3: sigmoid, selection on s + e_score_correction_bias, groups by the sum of
    // their top-2, weights = unbiased s, w / (Σw + 1e-20) if norm_topk_prob, · rsf.
    if (meta_bool(f, "norm_topk_prob").value_or(false))
      opt.with_normalization(Normalization::sum, 1.0f, 1e-20f);
    else
      opt.with_normalization(Normalization::none);
    Router<moekit::SigmoidScoring, GroupedTopKSelector> router(
        W, opt, Vector(), GroupedTopKSelector(G, TG, GroupScore::sum_of_top2, MaskFill::zero));
    if (f.has("gate.e_score_correction_bias"))
      router.set_correction_bias(float_vector(f, "gate.e_score_correction_bias", m.E));
    return run_case(c, std::move(router), std::move(experts), skip, std::move(shared));
  }

  if (fam == "gpt_oss") {
    // logits + router bias, top-k on the logits, softmax over the k, no renorm.
    opt.with_weight_source(WeightSource::softmax_of_selected).with_normalization(Normalization::none);
    Router<moekit::LogitScoring> router(W, opt, load_router_bias(f, m, router_name));
    moekit::ClampedSwiGluGate gate;
    gate.alpha = static_cast<float>(meta_double(f, "swiglu_alpha").value_or(1.702));
    gate.limit = static_cast<float>(meta_double(f, "swiglu_limit").value_or(7.0));
    auto experts = moekit::ClampedSwiGluExperts::from_transposed_gate_up(
        m.E, float_tensor(f, "experts.gate_up_proj", {m.E, m.d, 2 * m.f}),
        float_tensor(f, "experts.down_proj", {m.E, m.f, m.d}), moekit::GateUpLayout::interleaved, gate);
    experts.set_fused_biases(float_tensor(f, "experts.gate_up_proj_bias", {m.E, 2 * m.f}),
                             float_tensor(f, "experts.down_proj_bias", {m.E, m.d}),
                             moekit::GateUpLayout::interleaved);
    return run_case(c, std::move(router), std::optional(std::move(experts)), "");
  }

  if (fam == "llama4") {
    // top-k on the logits, w = sigmoid(logit) (no normalization), applied to the expert input.
    opt.with_weight_source(WeightSource::sigmoid_of_selected).with_normalization(Normalization::none);
    Router<moekit::LogitScoring> router(W, opt);
    std::optional<moekit::SwiGluExperts> experts;
    std::optional<Shared> shared;
    skip = gated_activation_skip(f);
    if (skip.empty()) {
      experts = moekit::SwiGluExperts::from_transposed_gate_up(
          m.E, float_tensor(f, "experts.gate_up_proj", {m.E, m.d, 2 * m.f}),
          float_tensor(f, "experts.down_proj", {m.E, m.f, m.d}), moekit::GateUpLayout::halves);
      shared = load_shared_expert(f, m, "shared_expert.", m.f);
    }
    return run_case(c, std::move(router), std::move(experts), skip, std::move(shared),
                    moekit::WeightedSum(moekit::WeightPlacement::input));
  }

  if (fam == "switch_transformers") {
    // softmax top-1 (p_max, no renormalization), first come first served capacity.
    const auto cap = meta_double(f, "expert_capacity");
    if (!cap || *cap < 1) FAIL() << c.rel << ": switch_transformers needs expert_capacity >= 1";
    opt.with_normalization(Normalization::none).with_capacity(CapacityLimit::absolute(static_cast<Index>(*cap)));
    Router<> router(W, opt, load_router_bias(f, m, router_name));
    std::optional<moekit::ReluExperts> experts;
    const std::string act = f.meta_or("dense_act_fn", "relu");
    if (act == "relu")
      experts = load_relu_experts(f, m, "wi", "wo", false);
    else
      skip = "dense_act_fn '" + act + "' (the harness builds ReLU experts only)";
    return run_case(c, std::move(router), std::move(experts), skip);
  }

  if (fam == "nllb_moe") {
    const std::string policy = f.meta_or("second_expert_policy", "all");
    if (policy != "all") GTEST_SKIP() << "nllb second_expert_policy '" << policy << "' is random (only 'all' is deterministic)";
    if (meta_bool(f, "batch_prioritized_routing").value_or(false))
      GTEST_SKIP() << "nllb batch_prioritized_routing (tokens ranked by probability) has no moekit capacity form";
    // Eval capacity: ceil(fraction · T) when the fraction is > 0, else
    // expert_capacity, else 2 · ceil(T / E).
    CapacityLimit cap;
    const double fraction = meta_double(f, "moe_eval_capacity_token_fraction").value_or(0.0);
    if (fraction > 0) {
      cap = CapacityLimit::of_tokens(static_cast<float>(fraction));
    } else if (const auto ec = meta_double(f, "expert_capacity")) {
      cap = CapacityLimit::absolute(static_cast<Index>(*ec));
    } else {
      cap = CapacityLimit::absolute(2 * ((m.T + m.E - 1) / m.E));
    }
    if (meta_bool(f, "normalize_router_prob_before_dropping").value_or(false)) {
      opt.with_normalization(Normalization::sum);  // p1 / (p1 + p2) before dropping, kept as is
    } else {
      opt.with_normalization(Normalization::none);
      cap.with_renormalize_after_drop(true);
    }
    c.dropped_weight_is_zero = true;
    opt.with_capacity(cap);
    Router<> router(W, opt, load_router_bias(f, m, router_name));
    std::optional<moekit::ReluExperts> experts;
    const std::string act = f.meta_or("activation_function", "relu");
    if (act == "relu") {
      experts = load_relu_experts(f, m, "fc1", "fc2", true);
      // Eval: every expert output is scaled by 1 − moe_token_dropout.
      experts->set_output_scale(static_cast<float>(1.0 - meta_double(f, "moe_token_dropout").value_or(0.0)));
    } else {
      skip = "activation_function '" + act + "' (the harness builds ReLU experts only)";
    }
    return run_case(c, std::move(router), std::move(experts), skip);
  }

  if (fam == "phimoe") {
    // sparsemixer eval path, ε = router_jitter_noise (a threshold at inference).
    const double eps = meta_double(f, "router_jitter_noise").value_or(0.01);
    return run_case(c, moekit::SparseMixerRouter(W, m.k, static_cast<float>(eps)), swiglu_or_skip(skip), skip);
  }

  if (fam == "expert_choice") {
    const double cf = meta_double(f, "capacity_factor").value_or(2.0);
    return run_case(c, moekit::ExpertChoiceRouter(W, static_cast<float>(cf)), swiglu_or_skip(skip), skip);
  }

  FAIL() << c.rel << ": unknown family '" << fam
         << "': no harness for it (add it to tests/conformance/conformance_test.cpp)";
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
  const GoldenCase& gc = GetParam();
  RecordProperty("golden_file", gc.rel);

  std::optional<st::File> file;
  try {
    file.emplace(st::File::load(gc.path));
  } catch (const std::exception& e) {
    FAIL() << gc.rel << ": " << e.what();
  }
  const st::File& f = *file;

  Case c;
  c.file = &f;
  c.rel = gc.rel;
  c.family = f.meta_or("family", "");
  if (c.family.empty()) c.family = fs::path(gc.path).parent_path().filename().string();
  RecordProperty("family", c.family);
  if (!known_family(c.family))
    FAIL() << gc.rel << ": unknown family '" << c.family
           << "': no harness for it (add it to tests/conformance/conformance_test.cpp)";

  const std::string mode = f.meta_or("mode", "eval");
  if (mode != "eval") GTEST_SKIP() << "mode '" << mode << "' (only eval semantics are implemented)";

  c.report << gc.name << ":";
  try {
    c.has_topk = c.family != "expert_choice";
    c.m = read_dims(f, c.has_topk);
    c.x = float_tensor(f, "input", {c.m.T, c.m.d});
    c.golden_out = float_tensor(f, "output", {c.m.T, c.m.d});
    c.golden_logits = float_tensor(f, "router_logits", {c.m.T, c.m.E});
    if (c.has_topk) {
      c.golden_weights = float_tensor(f, "topk_weights", {c.m.T, c.m.k});
      expect_shape(f, "topk_ids", {c.m.T, c.m.k});
      c.golden_ids = f.to_int_matrix("topk_ids");
    }
  } catch (const std::exception& e) {
    FAIL() << gc.rel << ": " << e.what();
  }
  try {
    run_family(c);
  } catch (const std::exception& e) {
    FAIL() << gc.rel << ": " << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, ConformanceCase, ::testing::ValuesIn(golden_cases()),
                         [](const ::testing::TestParamInfo<GoldenCase>& p) { return p.param.name; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(ConformanceCase);

}  // namespace
