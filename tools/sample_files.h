// The files `diffuse sample` handles besides its PNGs, and the checks on every output it will
// write, so that a bad path fails in one line naming its flag before any sampling starts
// (issue 14: `--out x.jpg` used to fail after all the work). --noise reads the starting noise
// and --out-raw writes the final samples, both as safetensors in PyTorch's NCHW layout, so that
// a deterministic sampler's output can be compared number for number with a diffusers pipeline
// given the same latents (tests/cpu/test_diffusers_latents.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace diffuse::cli {

// `path`, given to `flag`, must name a file with this extension (".png", ".safetensors"; any
// case; "" takes any), else a usage error naming the flag; and one this process can create: not an existing
// directory, and the nearest existing directory above it writable (options::check_output_directory,
// as for `train --out`; missing directories are created when writing), else ErrorKind::bad_input.
void check_output_file(const std::string& flag, const std::string& path, const std::string& extension);

// The tensor `noise` of a safetensors file: F32, NCHW [count, channels, side, side] (one image per
// row of --n). Returned as NHWC floats, GenerateRequest::initial_noise's layout. A missing file,
// tensor or a wrong dtype or shape is ErrorKind::bad_input naming the file.
std::vector<float> read_noise_file(const std::string& path, int64_t count, int channels, int side);
// Writes NHWC floats (generate()'s layout) as the tensor `samples`, NCHW f32, atomically.
void write_raw_samples(const std::string& path, const std::vector<float>& nhwc, int64_t count, int side,
                       int channels);

}  // namespace diffuse::cli
