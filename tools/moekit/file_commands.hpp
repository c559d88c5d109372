// SPDX-License-Identifier: MIT
// `moekit info`, `moekit check` and `moekit run`: the subcommands that read
// safetensors files.
//
//   moekit info FILE                      tensors, dtypes, shapes, metadata
//   moekit check CASE.safetensors...      golden cases (conformance/README.md contract)
//   moekit run --checkpoint DIR --layer N --input IN.safetensors --output OUT.safetensors
//              [--dtype f32|bf16|f16] [--threads N]
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <moekit/io/hf_checkpoint.hpp>
#include <moekit/io/safetensors.hpp>
#include <moekit/io/safetensors_source.hpp>
#include <moekit/io/safetensors_writer.hpp>
#include <moekit/moekit.hpp>

#include "cli.hpp"

namespace moekit_cli {

inline int info_command(int argc, char** argv) {
  const Args a = parse_args(argc, argv, 2, {});
  moekit::detail::require(a.positional.size() == 1, "info: expected one FILE, got ", a.positional.size());
  const moekit::SafetensorsFile f(a.positional[0]);
  std::printf("%s: %zu tensors, %zu bytes (header %zu)\n", a.positional[0].c_str(), f.size(), f.file_size(),
              f.header_size());
  for (const auto& n : f.names()) {
    const auto& t = f.info(n);
    std::printf("  %-48s %-5s %-20s %zu bytes\n", n.c_str(), moekit::safetensors_dtype_name(t.dtype),
                t.shape_string().c_str(), t.nbytes());
  }
  if (!f.metadata().empty()) {
    std::printf("metadata:\n");
    for (const auto& [k, v] : f.metadata()) std::printf("  %s = %s\n", k.c_str(), v.c_str());
  }
  return 0;
}

namespace detail {

// Max absolute and relative error of got against want; false on a shape mismatch.
struct Err {
  double abs = 0.0, rel = 0.0;
  bool shape_ok = true;
};
inline Err compare(const moekit::Matrix& got, const moekit::Matrix& want) {
  Err e;
  if (got.rows() != want.rows() || got.cols() != want.cols()) {
    e.shape_ok = false;
    return e;
  }
  if (want.size() == 0) return e;
  e.abs = static_cast<double>((got - want).cwiseAbs().maxCoeff());
  e.rel = e.abs / std::max(1.0, static_cast<double>(want.cwiseAbs().maxCoeff()));
  return e;
}

// One golden case: returns true when every tensor present agrees.
inline bool check_case(const std::string& path, std::string& line) {
  const moekit::SafetensorsTensorSource src(path);
  const moekit::SafetensorsCheckpoint& file = src.checkpoint();
  const auto& md = file.metadata();
  const auto fam_it = md.find("family");
  if (fam_it == md.end()) {
    line = "no \"family\" in the metadata";
    return false;
  }
  const moekit::FamilyConfig cfg = moekit::FamilyConfig::from_values(fam_it->second, md);
  const auto& known = moekit::FamilyConfig::families();
  if (std::find(known.begin(), known.end(), cfg.family) == known.end()) {
    line = "unknown family \"" + fam_it->second + "\"";
    return false;
  }
  moekit::MoELayer layer = moekit::presets::build(cfg, src);
  const moekit::Matrix x = file.to_matrix("input");
  const moekit::Matrix y = layer.forward(x);
  const moekit::RoutingPlan& plan = layer.last_plan();
  bool ok = true;
  std::string detail_text;
  char buf[160];
  const auto report = [&](const char* name, const Err& e, double tol) {
    const bool pass = e.shape_ok && e.rel <= tol;
    ok = ok && pass;
    std::snprintf(buf, sizeof buf, " %s %s(abs %.2e rel %.2e)", name, pass ? "" : "FAIL ", e.abs, e.rel);
    detail_text += buf;
  };
  // output and router logits: 1e-5 · max(1, max|golden|) (conformance/README.md).
  report("output", compare(y, file.to_matrix("output")), 1e-5);
  if (file.contains("router_logits")) report("logits", compare(layer.last_logits(), file.to_matrix("router_logits")), 1e-5);
  if (file.contains("topk_ids")) {
    moekit::IdMatrix ids = plan.ids;
    if (plan.dropped.size())  // a dropped choice still names its expert in the golden ids
      for (moekit::Index i = 0; i < ids.size(); ++i)
        if (ids.data()[i] < 0) ids.data()[i] = plan.dropped.data()[i];
    const moekit::IdMatrix want = file.to_ids("topk_ids");
    const bool same = want.rows() == ids.rows() && want.cols() == ids.cols() && want == ids;
    ok = ok && same;
    detail_text += same ? " ids exact" : " ids FAIL";
  }
  if (file.contains("topk_weights")) {
    moekit::Matrix w = plan.weights;
    moekit::Matrix want = file.to_matrix("topk_weights");
    if (plan.dropped.size() && cfg.family == "nllb_moe")  // NLLB stores 0 for a dropped slot
      for (moekit::Index i = 0; i < w.size(); ++i)
        if (plan.dropped.data()[i] >= 0) w.data()[i] = 0.0f;
    Err e = compare(w, want);
    e.rel = e.abs / std::max(1.0f, cfg.routed_scaling_factor);  // 1e-6 absolute, scaled by the factor
    report("weights", e, 1e-6);
  }
  if (file.contains("dropped")) {
    const moekit::IdMatrix want = file.to_ids("dropped");
    moekit::IdMatrix got = moekit::IdMatrix::Zero(want.rows(), want.cols());
    if (plan.dropped.size() && plan.dropped.rows() == got.rows() && plan.dropped.cols() == got.cols())
      for (moekit::Index i = 0; i < got.size(); ++i) got.data()[i] = plan.dropped.data()[i] >= 0 ? 1 : 0;
    const bool same = got == want;
    ok = ok && same;
    detail_text += same ? " dropped exact" : " dropped FAIL";
  }
  const auto scalar = [&](const char* name, double got) {
    if (!file.contains(name)) return;
    const double want = static_cast<double>(file.to_matrix(name)(0, 0));
    Err e;
    e.abs = std::fabs(got - want);
    e.rel = e.abs / std::max(1.0, std::fabs(want));
    report(name, e, 1e-5);
  };
  const moekit::Matrix& logits = layer.last_logits();
  if (cfg.top_k > 0) scalar("aux_loss", moekit::load_balancing_loss(logits, cfg.top_k));
  scalar("z_loss", moekit::router_z_loss(logits));
  if (file.contains("lb_loss")) scalar("lb_loss", moekit::switch_load_balancing_loss(logits, plan));
  if (file.contains("ec_token_ids")) {
    const auto* ec = layer.as<moekit::MoEBlock<moekit::ExpertChoiceRouter>>();
    const bool same = ec && ec->router().selection().token_ids == file.to_ids("ec_token_ids");
    ok = ok && same;
    detail_text += same ? " ec_ids exact" : " ec_ids FAIL";
    if (ec) report("ec_weights", compare(ec->router().selection().weights, file.to_matrix("ec_weights")), 1e-6);
  }
  line = cfg.family + ":" + detail_text;
  return ok;
}

}  // namespace detail

inline int check_command(int argc, char** argv) {
  const Args a = parse_args(argc, argv, 2, {});
  moekit::detail::require(!a.positional.empty(), "check: expected one or more CASE.safetensors files");
  int failed = 0;
  for (const auto& path : a.positional) {
    std::string line;
    bool ok = false;
    try {
      ok = detail::check_case(path, line);
    } catch (const std::exception& e) {
      line = e.what();
    }
    std::printf("%s %s %s\n", ok ? "PASS" : "FAIL", path.c_str(), line.c_str());
    failed += ok ? 0 : 1;
  }
  std::printf("%zu passed, %d failed\n", a.positional.size() - static_cast<std::size_t>(failed), failed);
  return failed == 0 ? 0 : 1;
}

inline int run_command(int argc, char** argv) {
  const Args a = parse_args(argc, argv, 2, {"checkpoint", "layer", "input", "output", "dtype", "threads", "family"});
  for (const char* req : {"checkpoint", "layer", "input", "output"})
    moekit::detail::require(a.has(req), "run: --", req, " is required");
  moekit::LoadOptions opt;
  opt.weights = moekit::parse_dtype(a.get("dtype", "f32"));
  opt.family = a.get("family");
  moekit::MoELayer layer = moekit::load_layer(a.get("checkpoint"), a.get_int("layer", 0), opt);
  const moekit::SafetensorsFile in(a.get("input"));
  const std::string name = in.contains("input") ? "input" : (in.size() == 1 ? in.names()[0] : "input");
  const moekit::Matrix x = in.to_matrix(name);
  const long long threads = a.get_int("threads", 1);
  moekit::detail::require(threads >= 1, "--threads: expected >= 1, got ", threads);
  moekit::ThreadPoolExecutor pool(static_cast<int>(threads));
  const moekit::Matrix y = layer.forward(x, &pool);
  moekit::SafetensorsWriter w;
  w.add("output", y).add("router_logits", layer.last_logits()).add("topk_ids", layer.last_plan().ids);
  w.add("topk_weights", layer.last_plan().weights);
  w.set_metadata("family", layer.family()).set_metadata("layer", a.get("layer"));
  w.write(a.get("output"));
  std::printf("%s layer %s: %ld tokens -> %s\n", layer.family().c_str(), a.get("layer").c_str(),
              static_cast<long>(x.rows()), a.get("output").c_str());
  return 0;
}

}  // namespace moekit_cli
