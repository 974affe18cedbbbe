// The forward (noising) process for a training batch: x_t and the training target from x0, the
// per-sample schedule coefficients and a Philox position, in one pass of the `noise` kernel
// family on the tensor's device.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "engine/noise_schedule.h"
#include "nn/tensor.h"

namespace diffuse {

struct QSampleResult {
  Tensor x_t;
  Tensor target;
};

// x0 f32 [B, ...] on the CPU or CUDA; coefs one per sample; noise element k of the flat batch is
// philox::normal_at(seed, kNoise, offset, k).
QSampleResult q_sample(const Tensor& x0, const std::vector<QSampleCoef>& coefs, PredictionType prediction,
                       uint64_t seed, uint64_t offset);
// The same with each sample's coefficients read from the schedule at its timestep: what the
// training step runs, allocating nothing but tensors (from the caches once a step has run).
QSampleResult q_sample(const Tensor& x0, const NoiseSchedule& schedule, std::span<const int64_t> timesteps,
                       uint64_t seed, uint64_t offset);

// The training step's draw (engine/train_step.cpp): the coefficients f32 [B] and the 1-based step
// number i64 [1] on x0's device, read when the kernel runs; the noise starts at Philox block
// offset + step · step_blocks. Nothing passes through the host.
QSampleResult q_sample(const Tensor& x0, const Tensor& sqrt_ab, const Tensor& sqrt_1mab, PredictionType prediction,
                       uint64_t seed, uint64_t offset, const Tensor& step, uint64_t step_blocks);

}  // namespace diffuse
