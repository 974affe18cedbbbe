// The GPU attention reference of the kernel benchmark (see cuda_util.h): what attention costs
// when composed from library calls, every score matrix written to memory. cuBLAS is column-major,
// so a row-major [rows, cols] matrix with leading dimension ld is its transpose: each product
// below is written as the transposed product (e.g. scoresᵀ = k·qᵀ) on the same memory.
#if DIFFUSE_WITH_CUDA
#include <cmath>

#include "benchmarks/cuda_util.h"

namespace diffuse::bench {

namespace {

// One strided-batched SGEMM per head, batched over the N images of [N, L, heads, d] tensors:
// operands a, b, c start at their head's offset and step by their image stride.
struct HeadGemm {
  cublasOperation_t ta, tb;
  int m, n, k;
  float alpha;
  const float* a;
  int lda;
  long long stride_a;
  const float* b;
  int ldb;
  long long stride_b;
  float* c;
  int ldc;
  long long stride_c;
};

void run(const HeadGemm& g, int batch) {
  const float zero = 0.f;
  DIFFUSE_CUBLAS_CHECK(cublasSgemmStridedBatched(bench_cublas(), g.ta, g.tb, g.m, g.n, g.k, &g.alpha, g.a, g.lda, g.stride_a,
                                         g.b, g.ldb, g.stride_b, &zero, g.c, g.ldc, g.stride_c, batch));
}

struct Geometry {
  int L, D, W, heads, n;
  long long tok, prob;  // per-image strides of the token tensors and of p
  explicit Geometry(const kernels::AttentionDesc& d)
      : L(int(d.len)), D(int(d.head_dim)), W(int(d.width())), heads(int(d.heads)), n(int(d.n)),
        tok((long long)d.len * d.width()), prob((long long)d.heads * d.len * d.len) {}
  long long tok_off(int h) const { return (long long)h * D; }
  long long prob_off(int h) const { return (long long)h * L * L; }
};

// p as a cuDNN tensor: N·heads·L rows of L values, softmax over the "channel" dim.
cudnnTensorDescriptor_t rows_desc(const Geometry& g) {
  cudnnTensorDescriptor_t desc;
  DIFFUSE_CUDNN_CHECK(cudnnCreateTensorDescriptor(&desc));
  DIFFUSE_CUDNN_CHECK(cudnnSetTensor4dDescriptor(desc, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, g.n * g.heads * g.L, g.L, 1, 1));
  return desc;
}

}  // namespace

void attention_reference_forward(const kernels::AttentionDesc& d, const float* q, const float* k, const float* v,
                                 float* p, float* out) {
  const Geometry g(d);
  const float scale = static_cast<float>(1.0 / std::sqrt(double(d.head_dim)));
  for (int h = 0; h < g.heads; ++h)  // scoresᵀ = k·qᵀ
    run({CUBLAS_OP_T, CUBLAS_OP_N, g.L, g.L, g.D, scale, k + g.tok_off(h), g.W, g.tok, q + g.tok_off(h), g.W, g.tok,
         p + g.prob_off(h), g.L, g.prob},
        g.n);
  cudnnTensorDescriptor_t desc = rows_desc(g);
  const float one = 1.f, zero = 0.f;
  cudnnStatus_t st = cudnnSoftmaxForward(bench_cudnn(), CUDNN_SOFTMAX_ACCURATE, CUDNN_SOFTMAX_MODE_CHANNEL, &one, desc,
                                         p, &zero, desc, p);
  cudnnDestroyTensorDescriptor(desc);
  DIFFUSE_CUDNN_CHECK(st);
  for (int h = 0; h < g.heads; ++h)  // outᵀ = vᵀ·pᵀ
    run({CUBLAS_OP_N, CUBLAS_OP_N, g.D, g.L, g.L, 1.f, v + g.tok_off(h), g.W, g.tok, p + g.prob_off(h), g.L, g.prob,
         out + g.tok_off(h), g.W, g.tok},
        g.n);
}

void attention_reference_backward(const kernels::AttentionDesc& d, const float* q, const float* k, const float* v,
                                  const float* dout, const float* p, float* dp, float* dq, float* dk, float* dv) {
  const Geometry g(d);
  const float scale = static_cast<float>(1.0 / std::sqrt(double(d.head_dim)));
  for (int h = 0; h < g.heads; ++h) {
    // dvᵀ = doutᵀ·p ; dpᵀ = v·doutᵀ
    run({CUBLAS_OP_N, CUBLAS_OP_T, g.D, g.L, g.L, 1.f, dout + g.tok_off(h), g.W, g.tok, p + g.prob_off(h), g.L, g.prob,
         dv + g.tok_off(h), g.W, g.tok},
        g.n);
    run({CUBLAS_OP_T, CUBLAS_OP_N, g.L, g.L, g.D, 1.f, v + g.tok_off(h), g.W, g.tok, dout + g.tok_off(h), g.W, g.tok,
         dp + g.prob_off(h), g.L, g.prob},
        g.n);
  }
  cudnnTensorDescriptor_t desc = rows_desc(g);
  const float one = 1.f, zero = 0.f;
  cudnnStatus_t st = cudnnSoftmaxBackward(bench_cudnn(), CUDNN_SOFTMAX_ACCURATE, CUDNN_SOFTMAX_MODE_CHANNEL, &one,
                                          desc, p, desc, dp, &zero, desc, dp);  // ds, in place in dp
  cudnnDestroyTensorDescriptor(desc);
  DIFFUSE_CUDNN_CHECK(st);
  for (int h = 0; h < g.heads; ++h) {
    // dqᵀ = kᵀ·dsᵀ / √d ; dkᵀ = qᵀ·ds / √d
    run({CUBLAS_OP_N, CUBLAS_OP_N, g.D, g.L, g.L, scale, k + g.tok_off(h), g.W, g.tok, dp + g.prob_off(h), g.L, g.prob,
         dq + g.tok_off(h), g.W, g.tok},
        g.n);
    run({CUBLAS_OP_N, CUBLAS_OP_T, g.D, g.L, g.L, scale, q + g.tok_off(h), g.W, g.tok, dp + g.prob_off(h), g.L, g.prob,
         dk + g.tok_off(h), g.W, g.tok},
        g.n);
  }
}

}  // namespace diffuse::bench
#endif  // DIFFUSE_WITH_CUDA
