// SPDX-License-Identifier: MIT
// Expert pruning: a new block with only a keep set of experts (their weights
// and router rows copied, ids renumbered), and the run-time mask that gives
// the same outputs without copying anything.
//
//   auto small = moekit::prune(block, keep);   // E' = |keep| experts, a normal block
//   moekit::mask_experts(block, keep);         // same block, others never selected
//
// NOTE: the kept experts keep their relative order: old id keep[i] (keep
// sorted increasingly) becomes new id i, so top-k ties still go to the same
// expert. The router keeps its options, selection policy, bias, correction
// bias and null experts (their rows stay last); its steering is carried over
// with ids renumbered (edits on removed experts are dropped). Top-k is then
// taken among the kept experts, and the softmax (if any) runs over them only,
// exactly what mask_experts() does through steering().disable(): for the
// selections that look at each expert alone (top-k, threshold, top-p) the
// pruned block and the masked block give the same outputs bit for bit. Two
// settings depend on E itself and differ between the two: a capacity factor
// (capacity = factor · T · k / E) and PromoteScale::logit_std (std over all
// E logits). Grouped top-k is refused at compile time: its groups are
// contiguous id ranges, which pruning would reshape. A disabled expert's
// selection score is -inf, so a correction bias cannot bring it back.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "../block/moe_block.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../expert/gated_experts.hpp"
#include "../expert/mlp_experts.hpp"
#include "../router/dynamic_k.hpp"
#include "../router/router.hpp"
#include "../router/topk.hpp"

MOEKIT_NAMESPACE_BEGIN

/// True for selection policies that rank each expert on its own score, so that
/// removing experts equals masking them. Specialise it for your own policy.
template <class Selection>
struct is_prunable_selection : std::false_type {};
template <>
struct is_prunable_selection<TopKSelector> : std::true_type {};
template <>
struct is_prunable_selection<ThresholdSelector> : std::true_type {};
template <>
struct is_prunable_selection<TopPSelector> : std::true_type {};

namespace detail {

/// keep sorted increasingly; throws unless it is a non-empty set of ids in [0, E).
inline std::vector<std::int32_t> checked_keep_set(std::vector<std::int32_t> keep, Index E) {
  detail::require(!keep.empty(), "keep set: expected at least 1 expert, got none");
  std::sort(keep.begin(), keep.end());
  for (std::size_t i = 0; i < keep.size(); ++i) {
    detail::require(keep[i] >= 0 && keep[i] < E, "keep set: expected expert ids in [0, ", E,
                    "), got ", keep[i]);
    if (i > 0)
      detail::require(keep[i] != keep[i - 1], "keep set: expert ", keep[i], " named twice");
  }
  return keep;
}

inline Matrix select_rows(const Matrix& m, const std::vector<std::int32_t>& rows) {
  Matrix out(static_cast<Index>(rows.size()), m.cols());
  for (std::size_t i = 0; i < rows.size(); ++i) out.row(static_cast<Index>(i)) = m.row(rows[i]);
  return out;
}

/// Rows of the experts in `keep` from a stacked [E·rows, cols] weight.
inline Matrix select_blocks(const Matrix& stacked, Index rows_per_expert,
                            const std::vector<std::int32_t>& keep) {
  Matrix out(static_cast<Index>(keep.size()) * rows_per_expert, stacked.cols());
  for (std::size_t i = 0; i < keep.size(); ++i)
    out.middleRows(static_cast<Index>(i) * rows_per_expert, rows_per_expert) =
        stacked.middleRows(keep[i] * rows_per_expert, rows_per_expert);
  return out;
}

inline Matrix select_rows_or_empty(const Matrix& m, const std::vector<std::int32_t>& rows) {
  return m.size() ? select_rows(m, rows) : Matrix();
}

/// Steering with ids renumbered by map (old id -> new id or -1).
inline Steering remap_steering(const Steering& s, const std::vector<std::int32_t>& map, Index new_E,
                               const std::vector<std::int32_t>& keep) {
  Steering out(new_E);
  const auto remap_ids = [&](const std::vector<std::int32_t>& ids) {
    std::vector<std::int32_t> r;
    for (const std::int32_t e : ids)
      if (map[static_cast<std::size_t>(e)] >= 0) r.push_back(map[static_cast<std::size_t>(e)]);
    return r;
  };
  if (s.logit_bias().size()) {
    Vector b(new_E);
    for (Index i = 0; i < new_E; ++i) b[i] = s.logit_bias()[keep[static_cast<std::size_t>(i)]];
    out.set_logit_bias(std::move(b));
  }
  if (s.token_bias().size()) {
    Matrix b(s.token_bias().rows(), new_E);
    for (Index i = 0; i < new_E; ++i) b.col(i) = s.token_bias().col(keep[static_cast<std::size_t>(i)]);
    out.set_token_bias(std::move(b));
  }
  out.disable(remap_ids(s.disabled()));
  out.force(remap_ids(s.forced()));
  out.promote(remap_ids(s.promoted()), s.promote_strength(), s.promote_scale());
  if (s.temperature() != 1.0f) out.set_temperature(s.temperature());
  return out;
}

}  // namespace detail

/// [E] old id -> new id after keeping `keep` (-1 for a removed expert).
inline std::vector<std::int32_t> pruned_id_map(Index E, const std::vector<std::int32_t>& keep) {
  const std::vector<std::int32_t> k = detail::checked_keep_set(keep, E);
  std::vector<std::int32_t> map(static_cast<std::size_t>(E), -1);
  for (std::size_t i = 0; i < k.size(); ++i) map[static_cast<std::size_t>(k[i])] = static_cast<std::int32_t>(i);
  return map;
}

/// The router restricted to `keep`: router rows (then the null-expert rows),
/// bias and correction bias entries, steering renumbered; options and
/// selection policy unchanged.
template <class Scoring, class Selection>
Router<Scoring, Selection> prune_router(const Router<Scoring, Selection>& router,
                                        const std::vector<std::int32_t>& keep) {
  static_assert(is_prunable_selection<Selection>::value,
                "prune_router: this selection policy does not rank each expert on its own score "
                "(e.g. grouped top-k), so removing experts would change its semantics; "
                "specialise moekit::is_prunable_selection if it does");
  const Index E = router.num_experts(), N = router.num_null_experts();
  const std::vector<std::int32_t> k = detail::checked_keep_set(keep, E);
  const auto E2 = static_cast<Index>(k.size());
  detail::require(E2 + N >= router.top_k(), "keep set: expected at least top_k = ", router.top_k(),
                  " experts (with ", N, " null experts), got ", E2);
  std::vector<std::int32_t> rows = k;
  for (Index n = 0; n < N; ++n) rows.push_back(static_cast<std::int32_t>(E + n));
  Vector bias;
  if (router.bias().size()) {
    bias.resize(static_cast<Index>(rows.size()));
    for (std::size_t i = 0; i < rows.size(); ++i) bias[static_cast<Index>(i)] = router.bias()[rows[i]];
  }
  Router<Scoring, Selection> out(detail::select_rows(router.weight(), rows), router.options(),
                                 std::move(bias), router.selection());
  if (router.correction_bias().size()) {
    Vector c(E2);
    for (Index i = 0; i < E2; ++i) c[i] = router.correction_bias()[k[static_cast<std::size_t>(i)]];
    out.set_correction_bias(std::move(c));
  }
  out.steering() = detail::remap_steering(router.steering(), pruned_id_map(E, k), E2, k);
  return out;
}

/// The gated expert bank restricted to `keep` (weights, biases, output scale, gate policy).
template <class Gate>
GatedExperts<Gate> prune_experts(const GatedExperts<Gate>& bank, const std::vector<std::int32_t>& keep) {
  const std::vector<std::int32_t> k = detail::checked_keep_set(keep, bank.num_experts());
  const Index f = bank.ffn_size(), d = bank.hidden_size();
  GatedExperts<Gate> out(static_cast<Index>(k.size()), detail::select_blocks(bank.gate_weights(), f, k),
                         detail::select_blocks(bank.up_weights(), f, k),
                         detail::select_blocks(bank.down_weights(), d, k), bank.gate_fn());
  out.set_biases(detail::select_rows_or_empty(bank.gate_bias(), k),
                 detail::select_rows_or_empty(bank.up_bias(), k),
                 detail::select_rows_or_empty(bank.down_bias(), k));
  out.set_output_scale(bank.output_scale());
  if (!bank.uses_packed_kernels()) out.use_packed_kernels(false);
  return out;
}

/// The MLP expert bank restricted to `keep`.
template <class Act>
MlpExperts<Act> prune_experts(const MlpExperts<Act>& bank, const std::vector<std::int32_t>& keep) {
  const std::vector<std::int32_t> k = detail::checked_keep_set(keep, bank.num_experts());
  MlpExperts<Act> out(static_cast<Index>(k.size()),
                      detail::select_blocks(bank.in_weights(), bank.ffn_size(), k),
                      detail::select_blocks(bank.out_weights(), bank.hidden_size(), k), bank.activation());
  out.set_biases(detail::select_rows_or_empty(bank.in_bias(), k),
                 detail::select_rows_or_empty(bank.out_bias(), k));
  out.set_output_scale(bank.output_scale());
  return out;
}

/// A new block with only the experts in `keep` (see the NOTE). Shared
/// experts, combine and block options are copied unchanged.
template <class R, class X, class C, class S>
MoEBlock<R, X, C, S> prune(const MoEBlock<R, X, C, S>& block, const std::vector<std::int32_t>& keep) {
  MoEBlock<R, X, C, S> out(prune_router(block.router(), keep), prune_experts(block.experts(), keep),
                           block.combine(), block.options());
  if (const S* shared = block.shared_experts()) out.set_shared_experts(*shared);
  return out;
}

/// Run-time pruning without copying: every expert outside `keep` is disabled
/// (router.steering().disable(...), replacing any previous disabled set).
/// Throws if one of them is currently forced (steering refuses both at once).
template <class Block>
void mask_experts(Block& block, const std::vector<std::int32_t>& keep) {
  const std::vector<std::int32_t> map = pruned_id_map(block.num_experts(), keep);
  std::vector<std::int32_t> off;
  for (std::size_t e = 0; e < map.size(); ++e)
    if (map[e] < 0) off.push_back(static_cast<std::int32_t>(e));
  block.router().steering().disable(std::move(off));
}

/// Undoes mask_experts (clears the disabled set; other steering stays).
template <class Block>
void clear_expert_mask(Block& block) {
  block.router().steering().disable({});
}

MOEKIT_NAMESPACE_END
