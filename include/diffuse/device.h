// diffuse::Device — where tensors live and code runs: the host CPU or a CUDA GPU.
// A leaf header (standard library only), like diffuse/error.h, so the public API and nn/ share
// one type: an embedding program passes the same Device the internal layers use.
#pragma once

namespace diffuse {

enum class Device : unsigned char { cpu, cuda };

}  // namespace diffuse
