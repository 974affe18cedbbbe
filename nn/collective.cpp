// See collective.h. The MPI side: initialisation when launched by mpirun, host collectives with a
// deadline (nonblocking MPI calls polled by MPI_Test), and the missing-rank census run when a
// deadline passes. CUDA tensors are handed to collective_nccl.cpp. Every MPI status is checked
// (mpi_check); MPI_ERRORS_RETURN is set on the world communicator so that failures come back as
// statuses instead of MPI's default abort without a word from us.
#include "nn/collective.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "diffuse/error.h"

#if DIFFUSE_WITH_MPI
#include <mpi.h>
#endif

namespace diffuse::collective {

namespace {

#if DIFFUSE_WITH_MPI
// One status check for every MPI call: the call's text and MPI's own description of the error.
void mpi_check(int status, const char* call, int rank) {
  if (status == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  MPI_Error_string(status, text, &length);
  throw Error("rank " + std::to_string(rank) + ": MPI error in " + call + ": " + std::string(text, length));
}
#define DIFFUSE_MPI_CHECK(call) mpi_check((call), #call, rank_)

// The value the census sends (a buffer that outlives every nonblocking send).
int& rank_storage() {
  static int value = 0;
  return value;
}

// The point-to-point tags of the missing-rank census (no collective uses tags).
constexpr int kQueryTag = 7101, kAliveTag = 7102;

// True when mpirun (Open MPI, MPICH/Hydra or a PMIx launcher) started this process: only then is
// MPI initialised, so that a plain `diffuse train` never touches MPI.
bool launched_by_mpirun() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(name)) return true;
  return false;
}

// Answers every pending "are you there?" of the census, so that a rank waiting in a collective
// is counted as alive by a rank whose deadline passed first.
void answer_queries(int rank) {
  for (;;) {
    int pending = 0;
    MPI_Status st;
    mpi_check(MPI_Iprobe(MPI_ANY_SOURCE, kQueryTag, MPI_COMM_WORLD, &pending, &st), "MPI_Iprobe", rank);
    if (!pending) return;
    int query = 0;
    mpi_check(MPI_Recv(&query, 1, MPI_INT, st.MPI_SOURCE, kQueryTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "MPI_Recv",
              rank);
    MPI_Request ignored;
    mpi_check(MPI_Isend(&rank_storage(), 1, MPI_INT, st.MPI_SOURCE, kAliveTag, MPI_COMM_WORLD, &ignored), "MPI_Isend",
              rank);
    mpi_check(MPI_Request_free(&ignored), "MPI_Request_free", rank);
  }
}
#endif

using Clock = std::chrono::steady_clock;

}  // namespace

Communicator::Communicator() {
  if (const char* t = std::getenv("DIFFUSE_COLLECTIVE_TIMEOUT")) set_timeout(std::atof(t));
  const char* bucket = std::getenv("DIFFUSE_GRAD_BUCKET_MB");
  const char* overlap = std::getenv("DIFFUSE_GRAD_OVERLAP");
  if (bucket || overlap)
    set_grad_buckets(bucket ? std::atof(bucket) : kDefaultGradBucketMiB, !overlap || std::string(overlap) != "0");
#if DIFFUSE_WITH_MPI
  if (!launched_by_mpirun()) return;
  int provided = 0;
  DIFFUSE_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
  mpi_ = true;
  DIFFUSE_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  DIFFUSE_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  DIFFUSE_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  rank_storage() = rank_;
  MPI_Comm local;
  DIFFUSE_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local));
  DIFFUSE_MPI_CHECK(MPI_Comm_rank(local, &local_rank_));
  DIFFUSE_MPI_CHECK(MPI_Comm_free(&local));
  if (size_ > 1) select_gpu();
#endif
}

Communicator::~Communicator() {
#if DIFFUSE_WITH_MPI
  if (!mpi_) return;
  destroy_nccl();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();  // at exit: nobody is left to hear of a failure
#endif
}

Communicator& world() {
  static Communicator instance;
  return instance;
}

void Communicator::set_timeout(double seconds) {
  if (!(seconds > 0)) throw Error("collective timeout must be positive seconds, got " + std::to_string(seconds));
  timeout_s_ = seconds;
}

void Communicator::abort(const std::string& message) const {
  std::fprintf(stderr, "diffuse: rank %d of %d: %s\n", rank_, size_, message.c_str());
  std::fflush(stderr);
#if DIFFUSE_WITH_MPI
  if (mpi_) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
  std::exit(1);
}

void Communicator::wait(void* request, const std::string& what) {
#if DIFFUSE_WITH_MPI
  auto* req = static_cast<MPI_Request*>(request);
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s_);
  for (int polls = 0;; ++polls) {
    int done = 0;
    DIFFUSE_MPI_CHECK(MPI_Test(req, &done, MPI_STATUS_IGNORE));
    if (done) return;
    answer_queries(rank_);
    if (Clock::now() > deadline) fail_missing_ranks(what);
    // Spin briefly (a step's collectives usually complete within microseconds of each other),
    // then poll every millisecond so that a waiting rank leaves the CPU to the others.
    if (polls > 2000) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
#else
  (void)request;
  (void)what;
#endif
}

void Communicator::answer_census() {
#if DIFFUSE_WITH_MPI
  if (mpi_) answer_queries(rank_);
#endif
}

void Communicator::fail_missing_ranks(const std::string& what) {
  std::string missing;
#if DIFFUSE_WITH_MPI
  // Ask every other rank; those alive answer from their own wait() (or from here, when their
  // deadline passed too) within the grace period.
  const double grace_s = std::min(5.0, timeout_s_);
  std::vector<MPI_Request> sends(static_cast<size_t>(size_), MPI_REQUEST_NULL);
  std::vector<int> alive(static_cast<size_t>(size_), 0), replies(static_cast<size_t>(size_), 0);
  std::vector<MPI_Request> recvs(static_cast<size_t>(size_), MPI_REQUEST_NULL);
  alive[static_cast<size_t>(rank_)] = 1;
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    DIFFUSE_MPI_CHECK(MPI_Isend(&rank_storage(), 1, MPI_INT, r, kQueryTag, MPI_COMM_WORLD, &sends[static_cast<size_t>(r)]));
    DIFFUSE_MPI_CHECK(MPI_Irecv(&replies[static_cast<size_t>(r)], 1, MPI_INT, r, kAliveTag, MPI_COMM_WORLD,
                                &recvs[static_cast<size_t>(r)]));
  }
  const auto grace_end = Clock::now() + std::chrono::duration<double>(grace_s);
  while (Clock::now() < grace_end) {
    answer_queries(rank_);
    bool all = true;
    for (int r = 0; r < size_; ++r) {
      if (alive[static_cast<size_t>(r)]) continue;
      int done = 0;
      DIFFUSE_MPI_CHECK(MPI_Test(&recvs[static_cast<size_t>(r)], &done, MPI_STATUS_IGNORE));
      alive[static_cast<size_t>(r)] = done;
      all = all && done;
    }
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (int r = 0; r < size_; ++r)
    if (!alive[static_cast<size_t>(r)]) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
  // The outstanding requests are left to MPI_Abort, which the caller's error path runs.
#endif
  throw Error(what + " did not complete within " + std::to_string(static_cast<int>(timeout_s_)) + " s: " +
              (missing.empty() ? std::string("every rank answered, so the ranks are at different collectives")
                               : "rank " + missing + " did not answer (dead or hung)"));
}

void Communicator::set_grad_buckets(double mib, bool overlap) {
  if (!(mib > 0) || mib > 1024)
    throw Error("gradient bucket size must be in (0, 1024] MiB, got " + std::to_string(mib));
  grad_bucket_bytes_ = std::max<int64_t>(4, static_cast<int64_t>(mib * 1024 * 1024));
  overlap_grads_ = overlap;
}

// ---- GradientSync ------------------------------------------------------------------------------

struct GradientSync::Impl {
#if DIFFUSE_WITH_MPI
  std::vector<std::vector<MPI_Request>> requests;  // per bucket: MPI_Iallreduce calls of <= INT_MAX floats
#endif
  std::vector<char> ready;  // per parameter: its grad_ready came this step
};

namespace {
double now_seconds() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }
}  // namespace

GradientSync::GradientSync(Communicator& communicator, std::vector<Tensor> params)
    : comm_(communicator), params_(std::move(params)), impl_(std::make_unique<Impl>()) {
  if (!comm_.distributed() || params_.empty()) return;  // one rank: nothing to reduce
  const Device device = params_.front().device();
  for (const Tensor& p : params_)
    if (p.dtype() != DType::f32 || p.device() != device || !p.meta())
      throw Error("gradient all-reduce: expected f32 parameters requiring grad on one device, got " + p.describe());
  // Reverse parameter order, the order backward finishes the gradients (the forward's order
  // reversed), cut greedily at the bucket size; a parameter larger than a bucket is one bucket.
  const int64_t cap = comm_.grad_bucket_bytes() / static_cast<int64_t>(sizeof(float));
  bucket_of_.resize(params_.size());
  for (size_t j = params_.size(); j-- > 0;) {
    const int64_t n = params_[j].numel();
    if (buckets_.empty() || (buckets_.back().numel > 0 && buckets_.back().numel + n > cap)) buckets_.emplace_back();
    buckets_.back().params.push_back(j);
    buckets_.back().numel += n;
    bucket_of_[j] = buckets_.size() - 1;
  }
  waiting_.resize(buckets_.size());
  impl_->ready.resize(params_.size());
#if DIFFUSE_WITH_MPI
  impl_->requests.resize(buckets_.size());
#endif
  if (device == Device::cpu)
    for (Bucket& b : buckets_) b.host.resize(static_cast<size_t>(b.numel));
}

GradientSync::~GradientSync() = default;

void GradientSync::begin(const std::string& what) {
  if (buckets_.empty()) return;
  what_ = "the all-reduce of " + what;
  // The parameters' autograd metas, for grad_ready (rebuilt only if a parameter got a new one).
  bool same = meta_index_.size() == params_.size();
  for (size_t i = 0; same && i < params_.size(); ++i)
    same = std::binary_search(meta_index_.begin(), meta_index_.end(), std::make_pair(
                                  static_cast<const AutogradMeta*>(params_[i].meta().get()), i));
  if (!same) {
    meta_index_.clear();
    for (size_t i = 0; i < params_.size(); ++i) meta_index_.emplace_back(params_[i].meta().get(), i);
    std::sort(meta_index_.begin(), meta_index_.end());
  }
  for (size_t k = 0; k < buckets_.size(); ++k) waiting_[k] = buckets_[k].params.size();
  std::fill(impl_->ready.begin(), impl_->ready.end(), 0);
  next_ = 0;
  in_backward_ = true;
  first_start_ = -1;
  stats_before_ = stats_;
}

void GradientSync::grad_ready(AutogradMeta& leaf) {
  if (buckets_.empty() || !in_backward_) return;
  auto it = std::lower_bound(meta_index_.begin(), meta_index_.end(),
                             std::make_pair(static_cast<const AutogradMeta*>(&leaf), size_t{0}));
  if (it == meta_index_.end() || it->first != &leaf) return;  // a leaf that is not a parameter
  const size_t i = it->second;
  if (impl_->ready[i]) return;
  impl_->ready[i] = 1;
  --waiting_[bucket_of_[i]];
  progress();
  if (comm_.overlap_grads()) launch_ready(true);
}

void GradientSync::launch_ready(bool during_backward) {
  while (next_ < buckets_.size() && (!during_backward || waiting_[next_] == 0)) {
    if (first_start_ < 0) first_start_ = now_seconds();
    launch(next_++);
    ++stats_.buckets;
    if (during_backward) ++stats_.buckets_during_backward;
  }
}

void GradientSync::launch(size_t k) {
  Bucket& b = buckets_[k];
  if (params_.front().device() == Device::cuda) {
    std::vector<Tensor> grads;
    grads.reserve(b.params.size());
    for (size_t i : b.params) {
      // NCCL averages in place while backward goes on. That is safe because no later node reads a
      // final gradient: its last user has run, and every backward in nn/ returns tensors of its
      // own, except those that pass their output's grad on (add's and sub's first input, a fused
      // residual, reshape's view), and nothing else holds that grad any more.
      // Never arrived (unused this step): zeros, so that every rank reduces the same buffers.
      if (!params_[i].grad().defined()) params_[i].set_grad(Tensor::zeros(params_[i].shape(), DType::f32, Device::cuda));
      grads.push_back(params_[i].grad());
    }
    comm_.nccl_start_bucket(grads, k, what_);
    return;
  }
  int64_t at = 0;
  for (size_t i : b.params) {
    const Tensor g = params_[i].grad();
    float* dst = b.host.data() + at;
    if (!g.defined()) {
      std::fill(dst, dst + params_[i].numel(), 0.0f);
    } else {
      if (g.dtype() != DType::f32 || g.device() != Device::cpu || g.numel() != params_[i].numel())
        throw Error(what_ + ": expected an f32 CPU gradient of " + std::to_string(params_[i].numel()) +
                    " elements, got " + g.describe());
      std::memcpy(dst, g.data<float>(), g.nbytes());
    }
    at += params_[i].numel();
  }
#if DIFFUSE_WITH_MPI
  auto& requests = impl_->requests[k];
  requests.clear();
  for (int64_t done = 0; done < b.numel;) {
    const int n = static_cast<int>(std::min<int64_t>(b.numel - done, INT_MAX));
    MPI_Request req;
    mpi_check(MPI_Iallreduce(MPI_IN_PLACE, b.host.data() + done, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req),
              "MPI_Iallreduce", comm_.rank());
    requests.push_back(req);
    done += n;
  }
#endif
}

// Open MPI moves a nonblocking collective forward only inside MPI calls: test the ones in flight.
void GradientSync::progress() {
#if DIFFUSE_WITH_MPI
  for (size_t k = 0; k < next_; ++k)
    for (MPI_Request& req : impl_->requests[k]) {
      if (req == MPI_REQUEST_NULL) continue;
      int done = 0;
      mpi_check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test", comm_.rank());
    }
#endif
}

void GradientSync::finish() {
  if (buckets_.empty()) return;
  const double t0 = now_seconds();
  in_backward_ = false;
  launch_ready(false);  // what backward did not start: all of it without overlap
  if (params_.front().device() == Device::cuda) {
    if (!comm_.nccl_finish_buckets(what_)) {  // captured into a graph: nothing ran, nothing to count
      stats_ = stats_before_;
      return;
    }
  } else {
    const float inv = 1.0f / static_cast<float>(comm_.size());
    for (size_t k = 0; k < buckets_.size(); ++k) {
#if DIFFUSE_WITH_MPI
      for (MPI_Request& req : impl_->requests[k]) comm_.wait(&req, what_);
#endif
      const float* src = buckets_[k].host.data();
      for (size_t i : buckets_[k].params) {
        if (!params_[i].grad().defined()) params_[i].set_grad(Tensor::zeros(params_[i].shape()));
        float* dst = params_[i].grad().data<float>();
        for (int64_t e = 0; e < params_[i].numel(); ++e) dst[e] = src[e] * inv;
        src += params_[i].numel();
      }
    }
  }
  const double t1 = now_seconds();
  ++stats_.steps;
  stats_.wait_seconds += t1 - t0;
  stats_.total_seconds += t1 - first_start_;
}

double Communicator::allreduce_mean(double value, const std::string& what) {
  allreduce_mean(std::span<double>(&value, 1), what);
  return value;
}

void Communicator::allreduce_mean(std::span<double> values, const std::string& what) {
  if (!distributed() || values.empty()) return;
#if DIFFUSE_WITH_MPI
  MPI_Request req;
  DIFFUSE_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_DOUBLE, MPI_SUM,
                                  MPI_COMM_WORLD, &req));
  wait(&req, what);
  for (double& v : values) v /= size_;
#else
  (void)what;
#endif
}

void Communicator::broadcast(const std::vector<Tensor>& tensors, int root, const std::string& what) {
  if (!distributed() || tensors.empty()) return;
  if (tensors.front().device() == Device::cuda) return nccl_broadcast(tensors, root, what);
#if DIFFUSE_WITH_MPI
  for (const Tensor& t : tensors) {
    if (t.device() != Device::cpu) throw Error("broadcast of " + what + ": mixed devices, got " + t.describe());
    auto* bytes = static_cast<char*>(t.raw());
    for (size_t done = 0; done < t.nbytes();) {
      const int n = static_cast<int>(std::min<size_t>(t.nbytes() - done, INT_MAX));
      MPI_Request req;
      DIFFUSE_MPI_CHECK(MPI_Ibcast(bytes + done, n, MPI_BYTE, root, MPI_COMM_WORLD, &req));
      wait(&req, what);
      done += static_cast<size_t>(n);
    }
  }
#else
  (void)root;
#endif
}

std::vector<double> Communicator::allgather(double value, const std::string& what) {
  std::vector<double> all(static_cast<size_t>(size_), value);
#if DIFFUSE_WITH_MPI
  if (distributed()) {
    MPI_Request req;
    DIFFUSE_MPI_CHECK(MPI_Iallgather(&value, 1, MPI_DOUBLE, all.data(), 1, MPI_DOUBLE, MPI_COMM_WORLD, &req));
    wait(&req, what);
  }
#else
  (void)what;
#endif
  return all;
}

void Communicator::check_agreement(uint64_t value, const std::string& what) {
  if (!distributed()) return;
#if DIFFUSE_WITH_MPI
  std::vector<uint64_t> all(static_cast<size_t>(size_));
  MPI_Request req;
  DIFFUSE_MPI_CHECK(MPI_Iallgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD, &req));
  wait(&req, "the agreement check of " + what);
  std::string differing;
  for (int r = 1; r < size_; ++r)
    if (all[static_cast<size_t>(r)] != all[0]) differing += (differing.empty() ? "" : ", ") + std::to_string(r);
  if (!differing.empty()) {
    char detail[64];
    std::snprintf(detail, sizeof detail, "%016llx", static_cast<unsigned long long>(all[0]));
    throw Error(what + " differ between ranks: rank " + differing + " disagree(s) with rank 0 (checksum " + detail +
                "); the ranks no longer train the same model");
  }
#else
  (void)value, (void)what;
#endif
}

void Communicator::barrier(const std::string& what) {
  if (!distributed()) return;
#if DIFFUSE_WITH_MPI
  MPI_Request req;
  DIFFUSE_MPI_CHECK(MPI_Ibarrier(MPI_COMM_WORLD, &req));
  wait(&req, what);
#else
  (void)what;
#endif
}

bool built_with_mpi() {
#if DIFFUSE_WITH_MPI
  return true;
#else
  return false;
#endif
}

bool built_with_nccl() {
#if DIFFUSE_WITH_NCCL
  return true;
#else
  return false;
#endif
}

std::string mpi_library_version() {
#if DIFFUSE_WITH_MPI
  char text[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int length = 0;
  if (MPI_Get_library_version(text, &length) != MPI_SUCCESS) return "unknown MPI";
  std::string v(text, static_cast<size_t>(length));
  return v.substr(0, v.find_first_of(",\n"));  // "Open MPI v4.1.4"
#else
  return "not built in";
#endif
}

uint64_t checksum(const std::vector<Tensor>& tensors) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over 32-bit words: order- and bit-sensitive
  for (const Tensor& t : tensors) {
    const Tensor host = t.device() == Device::cpu ? t : t.to(Device::cpu);
    const auto* words = static_cast<const uint32_t*>(host.raw());
    const size_t n = host.nbytes() / 4;
    for (size_t i = 0; i < n; ++i) h = (h ^ words[i]) * 1099511628211ull;
  }
  return h;
}

}  // namespace diffuse::collective
