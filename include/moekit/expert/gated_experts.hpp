// SPDX-License-Identifier: MIT
// GatedExperts<Gate>: a bank of E gated feed-forward experts in checkpoint layout.
//
//   expert_e(x) = s · (W_down,e · gate_fn(W_gate,e · x + b_gate,e, W_up,e · x + b_up,e) + b_down,e)
//
// gate_fn is a gate policy (activation.hpp): SiluGate gives SwiGLU (Mixtral,
// Qwen, OLMoE, DeepSeek, Llama-4, Granite, DBRX, Jamba, Phi-MoE), GeluGate
// GeGLU, ClampedSwiGluGate the gpt-oss expert. Biases are optional (gpt-oss
// has them); s is an optional output scale (1 by default).
//
// Weights are stored stacked as most checkpoints hold them: gate and up
// [E, f, d], down [E, d, f] (row-major [E·f, d] and [E·d, f]). Builders take
// the other layouts in circulation:
//   from_gate_up             fused [E, 2f, d], gate rows first (transformers v5, Granite)
//   from_transposed_gate_up  [E, d, 2f] used as x @ W, halves (Llama-4) or
//                            interleaved columns (gpt-oss), with down [E, f, d]
//
// NOTE: the bank also keeps its weights packed for the SIMD kernels
// (kernels/packing.hpp), built once at construction. Writing through the
// non-const views gate(e) / up(e) / down(e) marks the packing stale; the block
// repacks before its next forward (prepare()), and until then a const forward
// uses the plain Eigen path. The packed copy doubles the weight memory.
#pragma once

#include <cmath>
#include <utility>

#include <type_traits>

#include "../core/aligned_buffer.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../kernels/dispatch.hpp"
#include "../kernels/packing.hpp"
#include "../kernels/quantized.hpp"
#include "activation.hpp"
#include "epilogue.hpp"

MOEKIT_NAMESPACE_BEGIN

/// How experts with bf16, int8 or int4 weights compute (GatedExperts::set_bf16_math).
enum class Bf16Math {
  /// Where the CPU has AVX-512 BF16 (Isa::avx512_bf16): activations rounded to
  /// bf16 (nearest even), products summed in pairs by vdpbf16ps into f32 —
  /// twice the multiply-adds per instruction, as bf16 inference in PyTorch and
  /// ggml computes; about 2^-9 relative error per product. int8 / int4 codes
  /// are exact in bf16: their products are summed per group of 32 inputs and
  /// each group's sum is multiplied by its scale in f32. On NEON with BF16
  /// (Armv8.6): bf16 experts the same way through BFDOT (its own rounding of
  /// each pair sum: not the x86 bytes), int8 / int4 experts as with widen.
  /// With AMX (Isa::avx512_amx): bf16, int8 and int4 experts on the tile unit
  /// (the same rounded activations and group scales; the unit's own rounding
  /// of each 32-input chunk: not the vdpbf16ps bytes).
  /// Elsewhere, and where bf16_dot_enabled() is false (by default on Intel
  /// CPUs, whose vdpbf16ps runs at half their FP32 FMA rate): widen.
  dot,
  /// Weights widened (bf16) or dequantised (int8 / int4) to f32 as they load,
  /// f32 activations: f32 arithmetic on exactly the stored weights, on every ISA
  /// (int8 / int4 on AVX-512, int4 on AVX2: the sum of activation · code over
  /// each group of 32 inputs, times the group's scale: the same weights,
  /// another order of rounding).
  widen,
  /// int8 / int4 experts on x86 (Isa::avx2 and up) and on NEON with DotProd:
  /// activations quantised to int8 per group of 32 inputs (scale max|a| / 127,
  /// kernels::quantize_activation_group), integer products summed exactly
  /// (vpdpbusd with AVX-512 VNNI: twice the multiply-adds of vdpbf16ps;
  /// vpmaddwd / vpmaddubsw with AVX2; SDOT on NEON), each group's sum times
  /// weight scale · activation scale in f32, as llama.cpp's q8_0 activations
  /// compute. Every such ISA gives the same bytes. Faster, larger error (an
  /// input is off by up to half its group's step, max|a| / 254, where bf16 is
  /// off by |a| · 2^-9). bf16 experts compute as with dot; scalar and NEON
  /// without DotProd: widen.
  int8_dot,
};

/// How the gate and up halves share the 2f columns of a fused gate_up tensor.
enum class GateUpLayout {
  halves,       ///< [gate | up] (Llama-4, transformers v5, Granite)
  interleaved,  ///< gate = columns 0, 2, 4, ...; up = 1, 3, 5, ... (gpt-oss)
};

template <class Gate>
class GatedExperts {
 public:
  using GatePolicy = Gate;

  GatedExperts() = default;

  /// E experts of hidden size d and FFN size f, weights zero, no biases.
  GatedExperts(Index num_experts, Index hidden, Index ffn, Gate gate_fn = Gate())
      : gate_fn_(gate_fn) {
    detail::require(num_experts >= 1 && hidden >= 1 && ffn >= 1,
                    "experts: expected E, d, f >= 1, got E = ", num_experts, ", d = ", hidden,
                    ", f = ", ffn);
    E_ = num_experts;
    d_ = hidden;
    f_ = ffn;
    gate_ = Matrix::Zero(E_ * f_, d_);
    up_ = Matrix::Zero(E_ * f_, d_);
    down_ = Matrix::Zero(E_ * d_, f_);
    pack();
  }

  /// From stacked weights: gate and up [E·f, d], down [E·d, f].
  /// Throws moekit::Error on mismatched shapes or non-finite weights.
  GatedExperts(Index num_experts, Matrix gate, Matrix up, Matrix down, Gate gate_fn = Gate())
      : gate_fn_(gate_fn), gate_(std::move(gate)), up_(std::move(up)), down_(std::move(down)) {
    detail::require(num_experts >= 1, "experts: expected num_experts >= 1, got ", num_experts);
    E_ = num_experts;
    d_ = gate_.cols();
    detail::require(d_ >= 1, "expert gate weight: expected hidden size >= 1, got ", d_);
    detail::require(gate_.rows() >= E_ && gate_.rows() % E_ == 0,
                    "expert gate weight: expected [E * f, d] rows divisible by E = ", E_,
                    ", got shape ", detail::shape_string(gate_.rows(), gate_.cols()));
    f_ = gate_.rows() / E_;
    detail::require_shape("expert up weight", up_.rows(), up_.cols(), E_ * f_, d_);
    detail::require_shape("expert down weight", down_.rows(), down_.cols(), E_ * d_, f_);
    detail::require_finite("expert gate weight", gate_);
    detail::require_finite("expert up weight", up_);
    detail::require_finite("expert down weight", down_);
    pack();
  }

  /// From raw stacked buffers (copied): gate, up [E, f, d]; down [E, d, f].
  static GatedExperts from_stacked(Index E, Index d, Index f, const float* gate, const float* up,
                                   const float* down, Gate gate_fn = Gate()) {
    detail::require(E >= 1 && d >= 1 && f >= 1, "experts: expected E, d, f >= 1, got E = ", E,
                    ", d = ", d, ", f = ", f);
    return GatedExperts(E, ConstMatrixMap(gate, E * f, d), ConstMatrixMap(up, E * f, d),
                        ConstMatrixMap(down, E * d, f), gate_fn);
  }

  /// From a fused gate_up [E·2f, d] (per expert: f gate rows, then f up rows)
  /// and down [E·d, f].
  static GatedExperts from_gate_up(Index E, const MatrixRef& gate_up, const MatrixRef& down,
                                   Gate gate_fn = Gate()) {
    detail::require(E >= 1, "experts: expected num_experts >= 1, got ", E);
    detail::require(gate_up.rows() > 0 && gate_up.rows() % (2 * E) == 0,
                    "expert gate_up weight: expected [E * 2f, d] rows divisible by 2E = ", 2 * E,
                    ", got shape ", detail::shape_string(gate_up.rows(), gate_up.cols()));
    const Index f = gate_up.rows() / (2 * E), d = gate_up.cols();
    Matrix gate(E * f, d), up(E * f, d);
    for (Index e = 0; e < E; ++e) {
      gate.middleRows(e * f, f) = gate_up.middleRows(2 * e * f, f);
      up.middleRows(e * f, f) = gate_up.middleRows(2 * e * f + f, f);
    }
    return GatedExperts(E, std::move(gate), std::move(up), Matrix(down), gate_fn);
  }

  /// From transposed tensors used as x @ W: gate_up [E·d, 2f] and down [E·f, d].
  static GatedExperts from_transposed_gate_up(Index E, const MatrixRef& gate_up,
                                              const MatrixRef& down, GateUpLayout layout,
                                              Gate gate_fn = Gate()) {
    detail::require(E >= 1, "experts: expected num_experts >= 1, got ", E);
    detail::require(gate_up.rows() > 0 && gate_up.rows() % E == 0 && gate_up.cols() % 2 == 0,
                    "expert gate_up weight: expected [E * d, 2f] with E = ", E, ", got shape ",
                    detail::shape_string(gate_up.rows(), gate_up.cols()));
    const Index d = gate_up.rows() / E, f = gate_up.cols() / 2;
    detail::require_shape("expert down weight (transposed)", down.rows(), down.cols(), E * f, d);
    Matrix gate(E * f, d), up(E * f, d), dn(E * d, f);
    for (Index e = 0; e < E; ++e) {
      const auto gu = gate_up.middleRows(e * d, d);  // [d, 2f]
      for (Index i = 0; i < f; ++i) {
        const Index gc = layout == GateUpLayout::halves ? i : 2 * i;
        const Index uc = layout == GateUpLayout::halves ? f + i : 2 * i + 1;
        gate.row(e * f + i) = gu.col(gc).transpose();
        up.row(e * f + i) = gu.col(uc).transpose();
      }
      dn.middleRows(e * d, d) = down.middleRows(e * f, f).transpose();
    }
    return GatedExperts(E, std::move(gate), std::move(up), std::move(dn), gate_fn);
  }

  /// Optional biases: gate and up [E, f], down [E, d]; an empty matrix means none.
  GatedExperts& set_biases(Matrix gate_bias, Matrix up_bias, Matrix down_bias) {
    if (gate_bias.size())
      detail::require_shape("expert gate bias", gate_bias.rows(), gate_bias.cols(), E_, f_);
    if (up_bias.size())
      detail::require_shape("expert up bias", up_bias.rows(), up_bias.cols(), E_, f_);
    if (down_bias.size())
      detail::require_shape("expert down bias", down_bias.rows(), down_bias.cols(), E_, d_);
    detail::require_finite("expert gate bias", gate_bias);
    detail::require_finite("expert up bias", up_bias);
    detail::require_finite("expert down bias", down_bias);
    gate_bias_ = std::move(gate_bias);
    up_bias_ = std::move(up_bias);
    down_bias_ = std::move(down_bias);
    return *this;
  }
  /// Biases from a fused gate_up bias [E, 2f] in the given layout, and down [E, d].
  GatedExperts& set_fused_biases(const MatrixRef& gate_up_bias, Matrix down_bias,
                                 GateUpLayout layout) {
    detail::require_shape("expert gate_up bias", gate_up_bias.rows(), gate_up_bias.cols(), E_,
                          2 * f_);
    Matrix gb(E_, f_), ub(E_, f_);
    for (Index i = 0; i < f_; ++i) {
      gb.col(i) = gate_up_bias.col(layout == GateUpLayout::halves ? i : 2 * i);
      ub.col(i) = gate_up_bias.col(layout == GateUpLayout::halves ? f_ + i : 2 * i + 1);
    }
    return set_biases(std::move(gb), std::move(ub), std::move(down_bias));
  }

  /// Multiplies every expert output (after the down bias); NLLB-style eval scaling.
  GatedExperts& set_output_scale(float s) {
    detail::require(std::isfinite(s), "expert output scale: expected a finite value, got ", s);
    output_scale_ = s;
    return *this;
  }

  Index num_experts() const noexcept { return E_; }
  Index hidden_size() const noexcept { return d_; }
  Index ffn_size() const noexcept { return f_; }
  const Gate& gate_fn() const noexcept { return gate_fn_; }
  float output_scale() const noexcept { return output_scale_; }

  /// Per-expert weight views: gate(e), up(e) [f, d]; down(e) [d, f].
  /// Writable views mark the packed copy stale (see the note above).
  MatrixMap gate(Index e) {
    packed_ = false;
    return MatrixMap(gate_.data() + checked(e) * f_ * d_, f_, d_);
  }
  MatrixMap up(Index e) {
    packed_ = false;
    return MatrixMap(up_.data() + checked(e) * f_ * d_, f_, d_);
  }
  MatrixMap down(Index e) {
    packed_ = false;
    return MatrixMap(down_.data() + checked(e) * d_ * f_, d_, f_);
  }
  ConstMatrixMap gate(Index e) const {
    return ConstMatrixMap(gate_.data() + checked(e) * f_ * d_, f_, d_);
  }
  ConstMatrixMap up(Index e) const {
    return ConstMatrixMap(up_.data() + checked(e) * f_ * d_, f_, d_);
  }
  ConstMatrixMap down(Index e) const {
    return ConstMatrixMap(down_.data() + checked(e) * d_ * f_, d_, f_);
  }

  /// Stacked weights: gate, up [E·f, d]; down [E·d, f]. Biases [E, f] / [E, d] or empty.
  const Matrix& gate_weights() const noexcept { return gate_; }
  const Matrix& up_weights() const noexcept { return up_; }
  const Matrix& down_weights() const noexcept { return down_; }
  const Matrix& gate_bias() const noexcept { return gate_bias_; }
  const Matrix& up_bias() const noexcept { return up_bias_; }
  const Matrix& down_bias() const noexcept { return down_bias_; }

  /// Scratch floats forward() needs per input row.
  Index scratch_per_row() const noexcept { return 2 * f_; }
  /// Width of the hidden activation (the block splits it into column blocks).
  Index hidden_width() const noexcept { return f_; }
  /// True when the packed copy is current.
  bool packed() const noexcept { return packed_; }

  /// Repacks if a writable view was used since the last packing. The block
  /// calls this before every forward; cheap when nothing changed.
  void prepare() {
    if (!packed_ && use_packed_) pack();
  }

  /// Chooses the SIMD kernels over packed weights (default) or the plain Eigen
  /// GEMM path (no packed copy: half the memory; the foundation baseline the
  /// benchmarks compare against). Switching off frees the packed copy.
  GatedExperts& use_packed_kernels(bool on) {
    use_packed_ = on;
    if (!on) {
      packed_data_ = AlignedBuffer<unsigned char>();
      packed_ = false;
    } else if (!packed_) {
      pack();
    }
    return *this;
  }
  bool uses_packed_kernels() const noexcept { return use_packed_; }

  /// Storage type of the packed weights the kernels read, for every expert:
  /// Dtype::f32 (default), bf16 or f16 (half the bytes), i8 or i4 (symmetric,
  /// one f32 scale per 32 input features and output feature: about a quarter
  /// / an eighth of the bytes). The master weights are replaced by the values
  /// the kernels use (rounded, or dequantised), so gate(e), up(e), down(e) and
  /// the reference compute with exactly the same weights.
  GatedExperts& set_weight_dtype(Dtype t) {
    for (Index e = 0; e < E_; ++e) set_type(e, t);
    packed_ = false;
    pack();
    return *this;
  }
  /// How bf16, int8 and int4 experts compute (Bf16Math::dot by default; see
  /// Bf16Math). Only the arithmetic changes, not the stored weights.
  GatedExperts& set_bf16_math(Bf16Math m) noexcept {
    bf16_math_ = m;
    return *this;
  }
  Bf16Math bf16_math() const noexcept { return bf16_math_; }
  /// True when bf16 experts (and int8 / int4 ones on x86) use bf16 dot
  /// products in the current ISA (vdpbf16ps; BFDOT on NEON)
  /// (dot or int8_dot math and an ISA that has it; int8_dot takes int8 / int4
  /// experts to int8 activations instead where it can:
  /// quant_uses_int8_activations).
  bool bf16_uses_dot() const noexcept { return uses_dot(kernels::active()); }
  /// True when int8 and int4 experts use bf16 dot products (vdpbf16ps on
  /// AVX-512 BF16) in the current ISA: dot math, or int8_dot where the ISA has
  /// no int8-activation kernels. NEON keeps them on the f32 kernels.
  bool quant_uses_dot() const noexcept {
    const kernels::KernelTable& k = kernels::active();
    return !uses_int8_activations(k) && uses_quant_dot(k, 8);
  }
  /// True when int8 and int4 experts use int8 activations in the current ISA
  /// (int8_dot math and an x86 ISA: vpdpbusd with VNNI, else AVX2 integer
  /// multiply-adds).
  bool quant_uses_int8_activations() const noexcept {
    return uses_int8_activations(kernels::active());
  }

  /// The same for one expert: mixed precision within a bank (MC-MoE style).
  GatedExperts& set_expert_dtype(Index e, Dtype t) {
    set_type(checked(e), t);
    packed_ = false;
    pack();
    return *this;
  }
  /// Storage type of expert e (of every expert if they agree: weight_dtype()).
  Dtype expert_dtype(Index e) const {
    return types_.empty() ? Dtype::f32 : types_[static_cast<std::size_t>(checked(e))];
  }
  Dtype weight_dtype() const noexcept { return types_.empty() ? Dtype::f32 : types_[0]; }
  /// Bytes of expert e's packed weights, scales included (what a forward streams for it).
  Index bytes_of_expert(Index e) const {
    const auto t = expert_dtype(e);
    return type_bytes(t, kernels::panels(f_), d_, 32) + type_bytes(t, kernels::panels(d_), f_, 16);
  }
  Index bytes_per_expert() const { return E_ ? bytes_of_expert(0) : 0; }

  /// Phase 1 of expert e on n rows x [n, d]: hidden columns [c0, c1) of
  /// H = gate_fn(x·W_gateᵀ + b, x·W_upᵀ + b) into scratch [n, 2f] (H in the
  /// first n·f floats, row stride f). c0 is a multiple of 16.
  void forward_hidden(Index e, const float* x, Index n, float* scratch, Index c0, Index c1) const {
    forward_hidden(e, kernels::ActivationRows(x, d_), n, scratch, c0, c1);
  }

  /// The same on rows picked by index from a larger input (the block passes
  /// an expert's token rows of x this way: the kernels gather them as they
  /// pack them, no gathered copy is made first).
  void forward_hidden(Index e, const kernels::ActivationRows& x, Index n, float* scratch, Index c0,
                      Index c1) const {
    if (n == 0 || c0 >= c1) return;
    float* H = scratch;           // [n, f]
    float* U = scratch + n * f_;  // [n, f]
    if (packed_) {
      const kernels::KernelTable& k = kernels::active();
      const PackedExpert& pe = layout_[static_cast<std::size_t>(e)];
      if (is_quantized(pe.type)) {
        const int bits = pe.type == Dtype::i8 ? 8 : 4;
        (uses_int8_activations(k)  ? k.gate_up_quant_a8(bits)
         : uses_quant_dot(k, bits) ? k.gate_up_quant_dot(bits)
                                   : k.gate_up_quant(bits))(
            x, n, d_, packed_data_.data() + pe.gu,
            reinterpret_cast<const float*>(packed_data_.data() + pe.gu_scales), f_, c0, c1, H, U,
            f_);
      } else {
        with_packed_type(pe.type, [&](auto* tag) {
          using T = std::remove_pointer_t<decltype(tag)>;
          const T* p = reinterpret_cast<const T*>(packed_data_.data() + pe.gu);
          if constexpr (std::is_same_v<T, bf16>)
            if (uses_dot(k)) return k.gate_up_bf16_dot(x, n, d_, p, f_, c0, c1, H, U, f_);
          k.gate_up(p)(x, n, d_, p, f_, c0, c1, H, U, f_);
        });
      }
      if (gate_bias_.size() || up_bias_.size())
        for (Index r = 0; r < n; ++r)
          for (Index c = c0; c < c1; ++c) {
            if (gate_bias_.size()) H[r * f_ + c] += gate_bias_(e, c);
            if (up_bias_.size()) U[r * f_ + c] += up_bias_(e, c);
          }
      if constexpr (std::is_same_v<Gate, SiluGate>) {
        for (Index r = 0; r < n; ++r)
          k.silu_mul_f32(H + r * f_ + c0, U + r * f_ + c0, H + r * f_ + c0, c1 - c0);
        return;
      }
    } else {
      Index ldx = 0;
      const float* xs = kernels::contiguous_rows(x, n, d_, ldx);
      Eigen::Map<const Matrix, 0, Eigen::OuterStride<>> X(xs, n, d_, Eigen::OuterStride<>(ldx));
      Eigen::Map<Matrix, 0, Eigen::OuterStride<>> Hm(H + c0, n, c1 - c0, Eigen::OuterStride<>(f_));
      Eigen::Map<Matrix, 0, Eigen::OuterStride<>> Um(U + c0, n, c1 - c0, Eigen::OuterStride<>(f_));
      Hm.noalias() = X * gate_.middleRows(e * f_ + c0, c1 - c0).transpose();
      Um.noalias() = X * up_.middleRows(e * f_ + c0, c1 - c0).transpose();
      if (gate_bias_.size()) Hm.rowwise() += gate_bias_.row(e).segment(c0, c1 - c0);
      if (up_bias_.size()) Um.rowwise() += up_bias_.row(e).segment(c0, c1 - c0);
    }
    for (Index r = 0; r < n; ++r)
      for (Index c = c0; c < c1; ++c) H[r * f_ + c] = gate_fn_(H[r * f_ + c], U[r * f_ + c]);
  }

  /// Phase 2: output columns [c0, c1) of expert e, out [n, d] = H · W_downᵀ (+ b) (· s),
  /// H read from the scratch phase 1 filled. c0 is a multiple of 16.
  void forward_output(Index e, const float* scratch, Index n, float* out, Index c0,
                      Index c1) const {
    if (n == 0 || c0 >= c1) return;
    if (packed_) {
      const kernels::KernelTable& k = kernels::active();
      const PackedExpert& pe = layout_[static_cast<std::size_t>(e)];
      if (is_quantized(pe.type)) {
        const int bits = pe.type == Dtype::i8 ? 8 : 4;
        (uses_int8_activations(k)  ? k.matmul_quant_a8(bits)
         : uses_quant_dot(k, bits) ? k.matmul_quant_dot(bits)
                                   : k.matmul_quant(bits))(
            scratch, f_, n, f_, packed_data_.data() + pe.down,
            reinterpret_cast<const float*>(packed_data_.data() + pe.down_scales), d_, c0, c1, out,
            d_);
      } else {
        with_packed_type(pe.type, [&](auto* tag) {
          using T = std::remove_pointer_t<decltype(tag)>;
          const T* p = reinterpret_cast<const T*>(packed_data_.data() + pe.down);
          if constexpr (std::is_same_v<T, bf16>)
            if (uses_dot(k)) return k.matmul_bf16_dot(scratch, f_, n, f_, p, d_, c0, c1, out, d_);
          k.matmul(p)(scratch, f_, n, f_, p, d_, c0, c1, out, d_);
        });
      }
    } else {
      ConstMatrixMap H(scratch, n, f_);
      Eigen::Map<Matrix, 0, Eigen::OuterStride<>> Y(out + c0, n, c1 - c0, Eigen::OuterStride<>(d_));
      Y.noalias() = H * down_.middleRows(e * d_ + c0, c1 - c0).transpose();
    }
    detail::apply_output_epilogue(out, n, d_, c0, c1, down_bias_, e, output_scale_);
  }

  /// Runs expert e on n rows: x [n, d] -> out [n, d]; scratch [n, 2f].
  /// The kernel entry point of the block: no checks, no allocation.
  void forward(Index e, const float* x, Index n, float* out, float* scratch) const {
    forward_hidden(e, x, n, scratch, 0, f_);
    forward_output(e, scratch, n, out, 0, d_);
  }

  /// Convenience: expert e on x [n, d], returns [n, d]. Checks its arguments.
  Matrix forward(Index e, const MatrixRef& x) const {
    checked(e);
    detail::require_size("expert input columns (hidden size)", x.cols(), d_);
    const Matrix xc = x;  // contiguous copy
    Matrix out(x.rows(), d_);
    Matrix scratch(x.rows(), 2 * f_);
    forward(e, xc.data(), x.rows(), out.data(), scratch.data());
    return out;
  }

 private:
  bool uses_dot(const kernels::KernelTable& k) const noexcept {
    return bf16_math_ != Bf16Math::widen && k.has_dot() && bf16_dot_enabled(k.isa);
  }
  bool uses_quant_dot(const kernels::KernelTable& k, int bits) const noexcept {
    return uses_dot(k) && k.gate_up_quant_dot(bits) != nullptr;
  }
  bool uses_int8_activations(const kernels::KernelTable& k) const noexcept {
    return bf16_math_ == Bf16Math::int8_dot && k.has_int8_activations();
  }
  Index checked(Index e) const {
    detail::require(e >= 0 && e < E_, "expert id: expected [0, ", E_, "), got ", e);
    return e;
  }

  struct PackedExpert {
    Dtype type = Dtype::f32;
    std::size_t gu = 0, gu_scales = 0, down = 0, down_scales = 0;  // byte offsets into packed_data_
  };

  static bool is_quantized(Dtype t) noexcept { return t == Dtype::i8 || t == Dtype::i4; }

  // Bytes of a packed weight of `panels` panels, K rows of W values each (scales included).
  static Index type_bytes(Dtype t, Index panels, Index K, Index W) noexcept {
    if (t == Dtype::i8 || t == Dtype::i4)
      return panels * (kernels::quant_panel_code_bytes(K, W, t == Dtype::i8 ? 8 : 4) +
                       4 * kernels::quant_panel_scales(K, W));
    if (t == Dtype::bf16)
      return panels * kernels::packed_k<bf16>(K) * W * 2;  // k-pairs: odd K padded
    return panels * K * W * (t == Dtype::f32 ? 4 : 2);
  }

  void set_type(Index e, Dtype t) {
    detail::require(
        t == Dtype::f32 || t == Dtype::bf16 || t == Dtype::f16 || t == Dtype::i8 || t == Dtype::i4,
        "expert weight dtype: expected f32, bf16, f16, i8 or i4, got ", dtype_name(t));
    if (types_.size() != static_cast<std::size_t>(E_))
      types_.assign(static_cast<std::size_t>(E_), Dtype::f32);
    if (t == Dtype::bf16 || t == Dtype::f16)  // round the masters to the stored values
      for (Matrix* m : {&gate_, &up_})
        for (Index i = e * f_ * d_; i < (e + 1) * f_ * d_; ++i) round_to(m->data()[i], t);
    if (t == Dtype::bf16 || t == Dtype::f16)
      for (Index i = e * d_ * f_; i < (e + 1) * d_ * f_; ++i) round_to(down_.data()[i], t);
    types_[static_cast<std::size_t>(e)] = t;
  }
  static void round_to(float& v, Dtype t) {
    v = t == Dtype::bf16 ? static_cast<float>(bf16(v)) : static_cast<float>(f16(v));
    detail::require(std::isfinite(v), "expert weights: a value overflows ", dtype_name(t));
  }

  // Calls fn with a null pointer of the packed element type of a float type.
  template <class F>
  static void with_packed_type(Dtype t, F&& fn) {
    if (t == Dtype::bf16)
      fn(static_cast<bf16*>(nullptr));
    else if (t == Dtype::f16)
      fn(static_cast<f16*>(nullptr));
    else
      fn(static_cast<float*>(nullptr));
  }

  void pack() {
    if (!use_packed_) return;
    if (types_.size() != static_cast<std::size_t>(E_))
      types_.assign(static_cast<std::size_t>(E_), Dtype::f32);
    const Index pf = kernels::panels(f_), pd = kernels::panels(d_);
    const auto align = [](std::size_t n) { return (n + 63) / 64 * 64; };
    layout_.assign(static_cast<std::size_t>(E_), PackedExpert());
    std::size_t total = 0;
    for (Index e = 0; e < E_; ++e) {
      PackedExpert& pe = layout_[static_cast<std::size_t>(e)];
      pe.type = types_[static_cast<std::size_t>(e)];
      if (is_quantized(pe.type)) {
        const int bits = pe.type == Dtype::i8 ? 8 : 4;
        pe.gu = total;
        total = align(total +
                      static_cast<std::size_t>(pf * kernels::quant_panel_code_bytes(d_, 32, bits)));
        pe.gu_scales = total;
        total =
            align(total + static_cast<std::size_t>(pf * kernels::quant_panel_scales(d_, 32)) * 4);
        pe.down = total;
        total = align(total +
                      static_cast<std::size_t>(pd * kernels::quant_panel_code_bytes(f_, 16, bits)));
        pe.down_scales = total;
        total =
            align(total + static_cast<std::size_t>(pd * kernels::quant_panel_scales(f_, 16)) * 4);
      } else {
        pe.gu = total;
        total = align(total + static_cast<std::size_t>(type_bytes(pe.type, pf, d_, 32)));
        pe.down = total;
        total = align(total + static_cast<std::size_t>(type_bytes(pe.type, pd, f_, 16)));
      }
    }
    packed_data_.resize(total);
    for (Index e = 0; e < E_; ++e) {
      const PackedExpert& pe = layout_[static_cast<std::size_t>(e)];
      float* g = gate_.data() + e * f_ * d_;
      float* u = up_.data() + e * f_ * d_;
      float* dn = down_.data() + e * d_ * f_;
      if (is_quantized(pe.type)) {
        const int bits = pe.type == Dtype::i8 ? 8 : 4;
        float* gu_src[2] = {g, u};
        for (Index p = 0; p < pf; ++p)
          kernels::quantize_panel(
              gu_src, 2, f_, d_, p, bits,
              packed_data_.data() + pe.gu + p * kernels::quant_panel_code_bytes(d_, 32, bits),
              reinterpret_cast<float*>(packed_data_.data() + pe.gu_scales) +
                  p * kernels::quant_panel_scales(d_, 32));
        float* dn_src[1] = {dn};
        for (Index p = 0; p < pd; ++p)
          kernels::quantize_panel(
              dn_src, 1, d_, f_, p, bits,
              packed_data_.data() + pe.down + p * kernels::quant_panel_code_bytes(f_, 16, bits),
              reinterpret_cast<float*>(packed_data_.data() + pe.down_scales) +
                  p * kernels::quant_panel_scales(f_, 16));
      } else {
        with_packed_type(pe.type, [&](auto* tag) {
          using T = std::remove_pointer_t<decltype(tag)>;
          kernels::pack_gate_up(g, u, f_, d_, reinterpret_cast<T*>(packed_data_.data() + pe.gu));
          kernels::pack_panels(dn, d_, f_, reinterpret_cast<T*>(packed_data_.data() + pe.down));
        });
      }
    }
    packed_ = true;
  }

  Index E_ = 0, d_ = 0, f_ = 0;
  Gate gate_fn_;
  std::vector<Dtype> types_;                  // [E] storage type of each expert's packed weights
  std::vector<PackedExpert> layout_;          // [E] where each expert's packed weights are
  AlignedBuffer<unsigned char> packed_data_;  // every expert's packed weights (and scales)
  bool packed_ = false;
  bool use_packed_ = true;
  Bf16Math bf16_math_ = Bf16Math::dot;
  Matrix gate_;       // [E·f, d]
  Matrix up_;         // [E·f, d]
  Matrix down_;       // [E·d, f]
  Matrix gate_bias_;  // [E, f] or empty
  Matrix up_bias_;    // [E, f] or empty
  Matrix down_bias_;  // [E, d] or empty
  float output_scale_ = 1.0f;
};

/// SwiGLU experts (the common case).
using SwiGluExperts = GatedExperts<SiluGate>;
/// GeGLU experts (exact GELU).
using GeGluExperts = GatedExperts<GeluGate>;
/// gpt-oss experts: clamped SwiGLU with biases (set alpha / limit on the gate policy).
using ClampedSwiGluExperts = GatedExperts<ClampedSwiGluGate>;

MOEKIT_NAMESPACE_END
