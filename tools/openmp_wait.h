// Idle OpenMP threads must not spin by default. libgomp reads OMP_WAIT_POLICY once, while it
// loads (before main), and unset it lets a waiting thread spin before it sleeps: on a shared
// 2-core machine those spinning threads took the cores the working ones needed and turned a
// 0.6 s `tiny` training step into 27 s (docs/performance.md). So the CLI re-executes itself once
// with OMP_WAIT_POLICY=passive when the variable is unset; a value the user set is kept as it is.
#pragma once

namespace diffuse::cli {

// Call first thing in main(). Returns only when the policy was already set, when setenv fails
// (silently), or when the re-exec fails (then one warning line on stderr says idle threads may
// spin); otherwise the process image is replaced by the same program with the same arguments.
void default_to_passive_openmp_waits(char** argv);

}  // namespace diffuse::cli
