// Causal softmax attention for CPU training, forward and backward, one (batch, kv head) per task.
//
// Why a kernel of our own: at the shapes this project trains (head_dim 48, 256-512 positions) the
// attention is a few hundred small matrix products per layer, and both torch paths spend most of
// their time around them rather than in them (SDPA's CPU flash kernel, or our block-causal
// BlockCausalAttention's batched matmuls, softmax passes and slice copies). Here each task keeps its
// block of scores in cache from the product that makes it to the product that uses it, calls the
// BLAS torch links (single-threaded inside torch's thread pool) on strided views without copying,
// and recomputes the scores in the backward from the saved log-sum-exp instead of storing them.
// engine/models/native_attention.py builds it on the machine that runs it (so -march=native is
// right), and engine/train/kernels.py uses it only where it measures faster.
//
// Layout: q [B, T, H, D], k and v [B, T, KV, D], any strides with a unit last stride (views of the
// fused qkv projection are read in place); H a multiple of KV (grouped-query attention).
#include <ATen/core/Tensor.h>  // not ATen/ATen.h: the build is ~4 s shorter without it
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

extern "C" void sgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b,
                       const int* ldb, const float* beta, float* c, const int* ldc);

namespace {

// Row-major C[M, N] = alpha * op(A) op(B) + beta * C, through the column-major BLAS call
// C^T = op(B)^T op(A)^T (the same buffers, operands swapped).
inline void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  const char ca = trans_b ? 'T' : 'N', cb = trans_a ? 'T' : 'N';
  sgemm_(&ca, &cb, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}

void check_input(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4 && t.scalar_type() == at::kFloat && t.device().is_cpu() &&
                  t.stride(3) == 1,
              "native attention: ", name,
              " must be a float32 CPU tensor [batch, positions, heads, head_dim] with unit last "
              "stride");
}

struct Shape {
  int B, T, H, D, KV, rep;
};

Shape shape_of(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  check_input(q, "q");
  check_input(k, "k");
  check_input(v, "v");
  Shape s{(int)q.size(0), (int)q.size(1), (int)q.size(2), (int)q.size(3), (int)k.size(2), 0};
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == s.B && k.size(1) == s.T && k.size(3) == s.D &&
                  s.KV > 0 && s.H % s.KV == 0,
              "native attention: k and v must be [B, T, kv_heads, head_dim] with heads a multiple "
              "of kv_heads");
  s.rep = s.H / s.KV;
  return s;
}

// Scores of rows t0..t0+m (positions) against keys 0..t1 in S (row stride t1) become softmax
// probabilities, keys after a row's position get 0, and each row's log-sum-exp goes to lse.
void causal_softmax(float* S, int t1, int m, int t0, float* lse) {
  for (int i = 0; i < m; ++i) {
    float* row = S + (int64_t)i * t1;
    const int n = t0 + i + 1;
    float mx = row[0];
    for (int j = 1; j < n; ++j) mx = std::max(mx, row[j]);
    float sum = 0.f;
    for (int j = 0; j < n; ++j) {
      const float e = std::exp(row[j] - mx);
      row[j] = e;
      sum += e;
    }
    const float inv = 1.f / sum;
    for (int j = 0; j < n; ++j) row[j] *= inv;
    std::fill(row + n, row + t1, 0.f);
    lse[i] = mx + std::log(sum);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v, double scale_,
                                                    int64_t block) {
  const Shape s = shape_of(q, k, v);
  TORCH_CHECK(block > 0, "native attention: block must be positive");
  auto out = at::empty({s.B, s.T, s.H, s.D}, q.options());
  auto lse = at::empty({s.B, s.H, s.T}, q.options());
  const float scale = (float)scale_;
  const int QB = (int)std::min<int64_t>(block, s.T);
  const float *qd = q.data_ptr<float>(), *kd = k.data_ptr<float>(), *vd = v.data_ptr<float>();
  float *od = out.data_ptr<float>(), *ld = lse.data_ptr<float>();
  const int ldq = (int)q.stride(1), ldk = (int)k.stride(1), ldv = (int)v.stride(1);
  const int ldo = s.H * s.D;
  at::parallel_for(0, (int64_t)s.B * s.KV, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> S((size_t)QB * s.T);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / s.KV, g = task % s.KV;
      const float* kp = kd + b * k.stride(0) + g * k.stride(2);
      const float* vp = vd + b * v.stride(0) + g * v.stride(2);
      for (int r = 0; r < s.rep; ++r) {
        const int64_t h = g * s.rep + r;
        const float* qp = qd + b * q.stride(0) + h * q.stride(2);
        float* op = od + (b * s.T * s.H + h) * s.D;
        float* lp = ld + (b * s.H + h) * s.T;
        for (int t0 = 0; t0 < s.T; t0 += QB) {
          const int t1 = std::min(s.T, t0 + QB), m = t1 - t0;
          gemm(false, true, m, t1, s.D, scale, qp + (int64_t)t0 * ldq, ldq, kp, ldk, 0.f, S.data(),
               t1);
          causal_softmax(S.data(), t1, m, t0, lp + t0);
          gemm(false, false, m, s.D, t1, 1.f, S.data(), t1, vp, ldv, 0.f, op + (int64_t)t0 * ldo,
               ldo);
        }
      }
    }
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(
    const at::Tensor& d_out_, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, double scale_, int64_t block) {
  const Shape s = shape_of(q, k, v);
  TORCH_CHECK(out.is_contiguous() && lse.is_contiguous(), "native attention: out and lse must be "
              "the forward's own tensors");
  const at::Tensor d_out = d_out_.contiguous();
  auto dq = at::empty({s.B, s.T, s.H, s.D}, q.options());
  auto dk = at::zeros({s.B, s.T, s.KV, s.D}, q.options());
  auto dv = at::zeros({s.B, s.T, s.KV, s.D}, q.options());
  const float scale = (float)scale_;
  const int QB = (int)std::min<int64_t>(block, s.T);
  const float *qd = q.data_ptr<float>(), *kd = k.data_ptr<float>(), *vd = v.data_ptr<float>();
  const float *od = out.data_ptr<float>(), *gd = d_out.data_ptr<float>();
  const float* ld = lse.data_ptr<float>();
  float *dqd = dq.data_ptr<float>(), *dkd = dk.data_ptr<float>(), *dvd = dv.data_ptr<float>();
  const int ldq = (int)q.stride(1), ldk = (int)k.stride(1), ldv = (int)v.stride(1);
  const int ldo = s.H * s.D, ldkv = s.KV * s.D;
  at::parallel_for(0, (int64_t)s.B * s.KV, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> P((size_t)QB * s.T), dP((size_t)QB * s.T), delta(s.T);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / s.KV, g = task % s.KV;
      const float* kp = kd + b * k.stride(0) + g * k.stride(2);
      const float* vp = vd + b * v.stride(0) + g * v.stride(2);
      float* dkp = dkd + (b * s.T * s.KV + g) * s.D;  // the task owns its kv head's rows:
      float* dvp = dvd + (b * s.T * s.KV + g) * s.D;  // no other thread adds to them
      for (int r = 0; r < s.rep; ++r) {
        const int64_t h = g * s.rep + r;
        const float* qp = qd + b * q.stride(0) + h * q.stride(2);
        const float* op = od + (b * s.T * s.H + h) * s.D;
        const float* gp = gd + (b * s.T * s.H + h) * s.D;
        float* dqp = dqd + (b * s.T * s.H + h) * s.D;
        const float* lp = ld + (b * s.H + h) * s.T;
        for (int t = 0; t < s.T; ++t) {  // rowsum(P * dP) = dO . O, the softmax backward term
          float acc = 0.f;
          for (int d = 0; d < s.D; ++d) acc += gp[(int64_t)t * ldo + d] * op[(int64_t)t * ldo + d];
          delta[t] = acc;
        }
        for (int t0 = 0; t0 < s.T; t0 += QB) {
          const int t1 = std::min(s.T, t0 + QB), m = t1 - t0;
          float *Pb = P.data(), *dPb = dP.data();
          const float* q_rows = qp + (int64_t)t0 * ldq;
          const float* g_rows = gp + (int64_t)t0 * ldo;
          gemm(false, true, m, t1, s.D, scale, q_rows, ldq, kp, ldk, 0.f, Pb, t1);
          for (int i = 0; i < m; ++i) {  // P again from the saved log-sum-exp
            float* row = Pb + (int64_t)i * t1;
            const int n = t0 + i + 1;
            const float l = lp[t0 + i];
            for (int j = 0; j < n; ++j) row[j] = std::exp(row[j] - l);
            std::fill(row + n, row + t1, 0.f);
          }
          gemm(true, false, t1, s.D, m, 1.f, Pb, t1, g_rows, ldo, 1.f, dvp, ldkv);  // dV += P^T dO
          gemm(false, true, m, t1, s.D, 1.f, g_rows, ldo, vp, ldv, 0.f, dPb, t1);   // dP = dO V^T
          for (int i = 0; i < m; ++i) {  // dS = P * (dP - delta)
            const float* pr = Pb + (int64_t)i * t1;
            float* dr = dPb + (int64_t)i * t1;
            const float dl = delta[t0 + i];
            for (int j = 0; j < t1; ++j) dr[j] = pr[j] * (dr[j] - dl);
          }
          gemm(false, false, m, s.D, t1, scale, dPb, t1, kp, ldk, 0.f, dqp + (int64_t)t0 * ldo,
               ldo);                                                                 // dQ = dS K
          gemm(true, false, t1, s.D, m, scale, dPb, t1, q_rows, ldq, 1.f, dkp, ldkv);  // dK += dS^T Q
        }
      }
    }
  });
  return {dq, dk, dv};
}

TORCH_LIBRARY(tinylm, m) {
  m.def("causal_attention(Tensor q, Tensor k, Tensor v, float scale, int block) -> (Tensor, Tensor)");
  m.def("causal_attention_backward(Tensor d_out, Tensor q, Tensor k, Tensor v, Tensor out, "
        "Tensor lse, float scale, int block) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tinylm, CPU, m) {
  m.impl("causal_attention", &attention_forward);
  m.impl("causal_attention_backward", &attention_backward);
}
