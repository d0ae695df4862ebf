// Fused float32 CPU kernels for the model's elementwise pieces: RMSNorm, SwiGLU and rotary q/k.
//
// Each op is one pass over its rows (the torch-op versions in kernels.py take 4-8 passes and as
// many temporaries), parallel over rows with ATen's thread pool, vectorized with ATen's
// Vectorized<float> (the ISA is chosen at build time, see cpu_ops.py). Results do not depend on
// the thread count: every reduction runs inside one row, or over fixed blocks of rows summed in
// order. Inputs are float32 and contiguous (the Python side checks that).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <vector>

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kV = Vec::size();
constexpr int64_t kRowsPerBlock = 64;  // d_weight partial sums: a fixed row blocking

namespace {

inline float row_sum_squares(const float* x, int64_t n) {
  Vec acc(0.f);
  int64_t i = 0;
  for (; i + kV <= n; i += kV) {
    Vec v = Vec::loadu(x + i);
    acc = at::vec::fmadd(v, v, acc);
  }
  float lanes[kV];
  acc.store(lanes);
  float s = 0.f;
  for (int64_t j = 0; j < kV; ++j) s += lanes[j];
  for (; i < n; ++i) s += x[i] * x[i];
  return s;
}

inline float row_dot3(const float* a, const float* b, const float* c, int64_t n) {
  Vec acc(0.f);
  int64_t i = 0;
  for (; i + kV <= n; i += kV) acc = at::vec::fmadd(Vec::loadu(a + i) * Vec::loadu(b + i), Vec::loadu(c + i), acc);
  float lanes[kV];
  acc.store(lanes);
  float s = 0.f;
  for (int64_t j = 0; j < kV; ++j) s += lanes[j];
  for (; i < n; ++i) s += a[i] * b[i] * c[i];
  return s;
}

}  // namespace

// y = x · rstd · w, rstd = 1/sqrt(mean(x²) + eps) per row. x (..., D) → (y, rstd (...)).
std::vector<at::Tensor> rms_norm_forward(const at::Tensor& x, const at::Tensor& w, double eps) {
  const int64_t D = x.size(-1), N = x.numel() / D;
  auto y = at::empty_like(x);
  auto rstd = at::empty(x.sizes().slice(0, x.dim() - 1), x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  float* rp = rstd.data_ptr<float>();
  at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = xp + r * D;
      float* yr = yp + r * D;
      const float s = 1.f / std::sqrt(row_sum_squares(xr, D) / D + static_cast<float>(eps));
      rp[r] = s;
      const Vec vs(s);
      int64_t i = 0;
      for (; i + kV <= D; i += kV) (Vec::loadu(xr + i) * vs * Vec::loadu(wp + i)).store(yr + i);
      for (; i < D; ++i) yr[i] = xr[i] * s * wp[i];
    }
  });
  return {y, rstd};
}

// d_x = rstd · (g·w − x̂ · mean(g·w·x̂)), x̂ = x · rstd; d_w = Σ_rows g · x̂.
std::vector<at::Tensor> rms_norm_backward(const at::Tensor& g, const at::Tensor& x,
                                          const at::Tensor& rstd, const at::Tensor& w) {
  const int64_t D = x.size(-1), N = x.numel() / D;
  const int64_t blocks = (N + kRowsPerBlock - 1) / kRowsPerBlock;
  auto dx = at::empty_like(x);
  auto partial = at::zeros({blocks, D}, x.options());
  const float* gp = g.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const float* rp = rstd.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* dxp = dx.data_ptr<float>();
  float* pp = partial.data_ptr<float>();
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      float* pw = pp + b * D;
      const int64_t r_end = std::min(N, (b + 1) * kRowsPerBlock);
      for (int64_t r = b * kRowsPerBlock; r < r_end; ++r) {
        const float* gr = gp + r * D;
        const float* xr = xp + r * D;
        float* dr = dxp + r * D;
        const float s = rp[r];
        // mean(g·w·x̂) = rstd · mean(g·w·x)
        const float m = row_dot3(gr, wp, xr, D) * s / D;
        const Vec vs(s), vms(m * s);
        int64_t i = 0;
        for (; i + kV <= D; i += kV) {
          const Vec xv = Vec::loadu(xr + i), gv = Vec::loadu(gr + i);
          (vs * (gv * Vec::loadu(wp + i) - xv * vms)).store(dr + i);
          at::vec::fmadd(gv, xv * vs, Vec::loadu(pw + i)).store(pw + i);
        }
        for (; i < D; ++i) {
          dr[i] = s * (gr[i] * wp[i] - xr[i] * m * s);
          pw[i] += gr[i] * xr[i] * s;
        }
      }
    }
  });
  return {dx, partial.sum(0)};
}

// y = silu(gate) · up for gate_up = [gate | up] on the last dimension (..., 2H) → (..., H).
at::Tensor swiglu_forward(const at::Tensor& gate_up) {
  const int64_t H2 = gate_up.size(-1), H = H2 / 2, N = gate_up.numel() / H2;
  auto sizes = gate_up.sizes().vec();
  sizes.back() = H;
  auto y = at::empty(sizes, gate_up.options());
  const float* in = gate_up.data_ptr<float>();
  float* out = y.data_ptr<float>();
  const Vec one(1.f);
  at::parallel_for(0, N, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* gr = in + r * H2;
      const float* ur = gr + H;
      float* yr = out + r * H;
      int64_t i = 0;
      for (; i + kV <= H; i += kV) {
        const Vec gv = Vec::loadu(gr + i);
        (gv / (one + gv.neg().exp()) * Vec::loadu(ur + i)).store(yr + i);
      }
      for (; i < H; ++i) yr[i] = gr[i] / (1.f + std::exp(-gr[i])) * ur[i];
    }
  });
  return y;
}

// d_up = grad · silu(gate); d_gate = grad · up · σ(gate) · (1 + gate · (1 − σ(gate))).
at::Tensor swiglu_backward(const at::Tensor& grad, const at::Tensor& gate_up) {
  const int64_t H2 = gate_up.size(-1), H = H2 / 2, N = gate_up.numel() / H2;
  auto d = at::empty_like(gate_up);
  const float* gp = grad.data_ptr<float>();
  const float* in = gate_up.data_ptr<float>();
  float* dp = d.data_ptr<float>();
  const Vec one(1.f);
  at::parallel_for(0, N, 8, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* gr = in + r * H2;
      const float* ur = gr + H;
      const float* dy = gp + r * H;
      float* dg = dp + r * H2;
      float* du = dg + H;
      int64_t i = 0;
      for (; i + kV <= H; i += kV) {
        const Vec gv = Vec::loadu(gr + i), dyv = Vec::loadu(dy + i);
        const Vec sig = one / (one + gv.neg().exp());
        (dyv * gv * sig).store(du + i);
        (dyv * Vec::loadu(ur + i) * sig * (one + gv * (one - sig))).store(dg + i);
      }
      for (; i < H; ++i) {
        const float g = gr[i], sig = 1.f / (1.f + std::exp(-g));
        du[i] = dy[i] * g * sig;
        dg[i] = dy[i] * ur[i] * sig * (1.f + g * (1.f - sig));
      }
    }
  });
  return d;
}

namespace {
// out[i] = x[i]·cos[i] + x[i ± hd/2]·sin[i] (sin sign-folded: rotate-half as a swap of halves);
// sign −1 rotates back (the transpose, for backward).
inline void rotate(const float* x, const float* c, const float* s, float* out, int64_t hd, float sign) {
  const int64_t half = hd / 2;
  for (int64_t i = 0; i < half; ++i) {
    out[i] = x[i] * c[i] + sign * x[i + half] * s[i];
    out[i + half] = x[i + half] * c[i + half] + sign * x[i] * s[i + half];
  }
}
}  // namespace

// qkv (B, T, H + 2·KV, hd), cos/sin (T, hd) → q (B, H, T, hd), k (B, KV, T, hd), v (B, KV, T, hd),
// q and k rotated, all three head-major and contiguous (attention's layout).
std::vector<at::Tensor> rotary_qkv_forward(const at::Tensor& qkv, const at::Tensor& cos,
                                           const at::Tensor& sin, int64_t n_heads) {
  const int64_t B = qkv.size(0), T = qkv.size(1), NH = qkv.size(2), hd = qkv.size(3);
  const int64_t KV = (NH - n_heads) / 2;
  auto q = at::empty({B, n_heads, T, hd}, qkv.options());
  auto k = at::empty({B, KV, T, hd}, qkv.options());
  auto v = at::empty({B, KV, T, hd}, qkv.options());
  const float* in = qkv.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  float* qp = q.data_ptr<float>();
  float* kp = k.data_ptr<float>();
  float* vp = v.data_ptr<float>();
  at::parallel_for(0, B * T, 16, [&](int64_t begin, int64_t end) {
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / T, t = bt % T;
      const float* row = in + bt * NH * hd;
      const float* c = cp + t * hd;
      const float* s = sp + t * hd;
      for (int64_t h = 0; h < n_heads; ++h)
        rotate(row + h * hd, c, s, qp + ((b * n_heads + h) * T + t) * hd, hd, 1.f);
      for (int64_t h = 0; h < KV; ++h) {
        rotate(row + (n_heads + h) * hd, c, s, kp + ((b * KV + h) * T + t) * hd, hd, 1.f);
        std::memcpy(vp + ((b * KV + h) * T + t) * hd, row + (n_heads + KV + h) * hd, hd * sizeof(float));
      }
    }
  });
  return {q, k, v};
}

// The transpose of rotary_qkv_forward: (d_q, d_k, d_v) head-major → d_qkv (B, T, H + 2·KV, hd).
at::Tensor rotary_qkv_backward(const at::Tensor& dq, const at::Tensor& dk, const at::Tensor& dv,
                               const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t B = dq.size(0), H = dq.size(1), T = dq.size(2), hd = dq.size(3), KV = dk.size(1);
  const int64_t NH = H + 2 * KV;
  auto d = at::empty({B, T, NH, hd}, dq.options());
  const float* qp = dq.data_ptr<float>();
  const float* kp = dk.data_ptr<float>();
  const float* vp = dv.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  float* out = d.data_ptr<float>();
  at::parallel_for(0, B * T, 16, [&](int64_t begin, int64_t end) {
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / T, t = bt % T;
      float* row = out + bt * NH * hd;
      const float* c = cp + t * hd;
      const float* s = sp + t * hd;
      for (int64_t h = 0; h < H; ++h)
        rotate(qp + ((b * H + h) * T + t) * hd, c, s, row + h * hd, hd, -1.f);
      for (int64_t h = 0; h < KV; ++h) {
        rotate(kp + ((b * KV + h) * T + t) * hd, c, s, row + (H + h) * hd, hd, -1.f);
        std::memcpy(row + (H + KV + h) * hd, vp + ((b * KV + h) * T + t) * hd, hd * sizeof(float));
      }
    }
  });
  return d;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rms_norm_forward", &rms_norm_forward);
  m.def("rms_norm_backward", &rms_norm_backward);
  m.def("swiglu_forward", &swiglu_forward);
  m.def("swiglu_backward", &swiglu_backward);
  m.def("rotary_qkv_forward", &rotary_qkv_forward);
  m.def("rotary_qkv_backward", &rotary_qkv_backward);
}
