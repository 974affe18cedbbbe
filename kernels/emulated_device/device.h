// The emulated CUDA device's internals, shared by the files of this folder that serve the CUDA
// runtime, cuBLAS, cuBLASLt and cuDNN APIs (built only with -DDIFFUSE_CUDA=EMULATED). Nothing
// outside kernels/emulated_device/ includes this header: host code sees only the toolkit's own
// headers, and kernel sources reach the device through kernel_queue.h.
//
// The model, stricter than a real GPU where it can be:
//  - Device memory is a separate mapped region. cudaMalloc places each allocation so that it ends
//    (rounded up to 256 bytes) at a PROT_NONE guard page and fills it with 0xFF bytes (NaN in f32
//    and bf16). While host code runs the whole region is PROT_NONE: a host dereference of a device
//    pointer faults and is reported with the allocation it hit.
//  - Work is queued per stream and runs, in order, on the host thread only when the host
//    synchronises with it (stream/event/device synchronise, a synchronous copy, a library call
//    documented as blocking). While queued work runs, live allocations are readable and writable.
//  - Cross-stream order comes only from events (and the legacy default stream's implicit barrier
//    with blocking streams).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <functional>
#include <mutex>
#include <string>

namespace diffuse::emulated_device {

// ---- device memory (memory.cpp) ---------------------------------------------------------------

// True when p points anywhere into the device-memory region (live allocation or not).
bool in_device_region(const void* p);
// True when [p, p + bytes) lies inside one live allocation (bytes == 0: p inside it or at its end).
bool is_device_range(const void* p, size_t bytes);
// For messages: "allocation #7 of 4096 bytes at 0x7f.. (offset 12)" or "no live allocation".
std::string describe_address(const void* p);

// ---- streams and queued work (streams.cpp) ----------------------------------------------------

// Queues `run` on `stream` (nullptr: the legacy default stream). It runs later, on the host
// thread, when the host synchronises with that work, with device memory accessible. `what` names
// the work in reports ("cublasGemmEx", "kernel gn_forward_stats launched at
// group_norm_forward.cu:120").
// Returns cudaErrorInvalidResourceHandle for an unknown stream and the sticky error if the
// device has already failed. An exception thrown by `run` makes cudaErrorLaunchFailure the
// device's sticky error; its message is printed on stderr prefixed with `what`.
cudaError_t enqueue(cudaStream_t stream, std::string what, std::function<void()> run);

// Runs everything queued on `stream` (and, first, whatever that work waits for on other streams).
cudaError_t synchronize_stream(cudaStream_t stream);
// Runs everything queued on every stream.
cudaError_t synchronize_all();
bool valid_stream(cudaStream_t stream);
// cudaSuccess until queued work fails; afterwards every call that touches the device returns it.
cudaError_t sticky_error();

// What the host asked of the device, counted since the process started, so a test can prove that
// a loop's steady state makes no host-blocking call (tests/cuda/test_cuda_graphs_sampler.cpp).
// waits: calls that return only after device work ran — cudaStreamSynchronize,
// cudaEventSynchronize, cudaDeviceSynchronize, the synchronous copies and memsets, cudaFree and the
// blocking library calls (every caller of synchronize_stream/synchronize_all); host_copies:
// cudaMemcpy and cudaMemcpyAsync calls with a pageable host side (on a GPU each one may block the
// host); a copy to or from cudaMallocHost/cudaHostAlloc memory is not one.
struct HostTraffic {
  unsigned long long waits = 0;
  unsigned long long host_copies = 0;
};
HostTraffic host_traffic();
// True when [p, p + bytes) lies inside one live cudaMallocHost/cudaHostAlloc allocation.
bool is_pinned_host_range(const void* p, size_t bytes);

// ---- the virtual card (cudart.cpp) ------------------------------------------------------------

// The dynamic shared memory a launch of `kernel` may use: 48 KiB, or what
// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, n) opted into.
int max_dynamic_shared_bytes(const void* kernel);

// ---- internals of the runtime (memory.cpp, streams.cpp, cudart*.cpp) ---------------------------
// Everything below is for the files that implement the CUDA runtime API; the cuBLAS and cuDNN
// emulations need only the functions above.

// One lock for the whole device: host threads may call the API concurrently, and queued work
// runs with it held. Recursive, because work items (cuBLAS, cuDNN) call back into
// is_device_range() and friends while the flushing thread holds it.
std::recursive_mutex& device_lock();

// Brings the device up on first use (memory region, fault handler, leak check at exit) and
// re-asserts the fault handler on later calls (test frameworks replace SIGSEGV handlers per
// test). cudaErrorInitializationError, with a message on stderr once, when the configuration in
// the environment is bad. Call with device_lock() held.
cudaError_t initialise_device();
// The calling thread's last-error slot (cudaGetLastError / cudaPeekAtLastError): records a
// failing status and returns it, so API functions end with `return record(status);`.
cudaError_t record(cudaError_t status);

// Opens every API entry point: holds the device lock for the call and brings the device up.
class ApiCall {
 public:
  ApiCall() : lock_(device_lock()), status_(initialise_device()) {}
  // cudaSuccess, or why the device is unusable (bad configuration).
  cudaError_t status() const { return status_; }

 private:
  std::unique_lock<std::recursive_mutex> lock_;
  cudaError_t status_;
};

// Device memory internals (memory.cpp).
// Reserves the region on first call; false, with a message on stderr, for a bad
// DIFFUSE_EMU_DEVICE_MEMORY or when the address space cannot be had.
bool reserve_device_memory();
// Installs the SIGSEGV handler and an alternate signal stack unless they are in place.
void assert_fault_handler();
size_t device_memory_bytes();  // totalGlobalMem: env DIFFUSE_EMU_DEVICE_MEMORY, default 16 GiB
size_t free_device_memory_bytes();
cudaError_t allocate_device_memory(void** p, size_t bytes);  // cudaMalloc without the checks of state
cudaError_t free_device_memory(void* p);                      // cudaFree of a non-null pointer
// True when p is not null and lies outside the device region (a host pointer, as far as can be told).
bool is_host_pointer(const void* p);

// Brackets the execution of queued work: while at least one WorkScope is alive, live allocations
// are readable and writable (each opened by the fault handler on the work's first touch) and any
// other fault in the region is blamed on the work named by the latest announce_work(). The
// destructor makes the whole region inaccessible again.
class WorkScope {
 public:
  WorkScope();
  ~WorkScope();
  WorkScope(const WorkScope&) = delete;
  WorkScope& operator=(const WorkScope&) = delete;
};
// Names the work item about to run (copied into a fixed buffer the fault handler reads). For a
// kernel ("kernel ..." from kernel_queue.cpp) it also opens every live allocation first: the SIMT
// emulator's own SIGSEGV handler must not see first-touch faults (memory.cpp says why).
void announce_work(const std::string& what);
// After a work item: every allocation's slack (its end up to the 256-byte rounding) must still
// hold 0xFF. Returns cudaErrorIllegalAddress and prints "out-of-bounds write by <what> past the
// end of allocation #N ..." when not.
cudaError_t check_slack_after(const std::string& what);

// Counts one copy with a host side in host_traffic() (cudart_memory.cpp). Call with device_lock() held.
void count_host_copy();

// Makes `status` the device's sticky error (first one wins) and drops all queued work.
void fail_device(cudaError_t status);

}  // namespace diffuse::emulated_device
