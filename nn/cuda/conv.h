// cuDNN convolutions for ops::conv2d on CUDA tensors: NHWC activations, KRSC (= OHWI) filters, f32
// (exact FMA math unless nn/cuda/blas.h's set_allow_tf32) or bf16 storage with f32 compute.
// Per-side padding: cuDNN takes the symmetric part; an asymmetric excess such as diffusers'
// (0, 1, 0, 1) downsample pad is applied by copying x into a zero-bordered buffer first.
#pragma once
#include "kernels/conv2d.h"
#include "nn/tensor.h"

namespace diffuse::cuda {

// y = conv(x, w) + bias; the shapes were checked by ops::conv2d. bias may be undefined.
void conv2d_forward(const kernels::Conv2dDesc& d, const Tensor& x, const Tensor& w, const Tensor& bias,
                    const Tensor& y);
// Gradients from dy [N, Ho, Wo, Cout]; each of dx, dw, dbias may be undefined (not wanted) and
// is overwritten otherwise.
void conv2d_backward(const kernels::Conv2dDesc& d, const Tensor& x, const Tensor& w, const Tensor& dy,
                     const Tensor& dx, const Tensor& dw, const Tensor& dbias);

// How many (shape, dtype, direction) algorithm searches have run: a second identical call must
// not add one (tests).
int conv_algorithm_searches();

}  // namespace diffuse::cuda
