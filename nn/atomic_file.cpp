// AtomicFile: write to a temporary in the destination's directory, fsync, rename into place.
// rename(2) within one file system is atomic, which is the whole trick; the per-process counter
// in the temporary's name keeps two writers in one process (threads) from sharing a temporary.
#include "nn/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "diffuse/error.h"

namespace diffuse {

namespace {

constexpr size_t kBufferBytes = 1 << 20;
std::atomic<uint64_t> temp_counter{0};

std::string errno_text(int err) { return std::strerror(err); }

std::string parent_dir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// What a failed write says: EFBIG gets the limit that caused it, since "File too large" alone
// sends people looking at the disk.
std::string write_error_text(int err) {
  if (err != EFBIG) return errno_text(err);
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
    return errno_text(err) + " (the file size limit, ulimit -f, is " + std::to_string(limit.rlim_cur) + " bytes)";
  return errno_text(err);
}

}  // namespace

void create_directories(const std::string& dir, const std::string& what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(dir + ": cannot create " + what + " (" + ec.message() + ")", ErrorKind::bad_input);
}

Error filesystem_failure(const std::filesystem::filesystem_error& e) {
  const std::string path = !e.path1().empty() ? e.path1().string() : e.path2().string();
  return Error((path.empty() ? std::string("a file or directory") : path) + ": " + e.code().message(),
               ErrorKind::bad_input);
}

void fsync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void ignore_file_size_signal() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (::sigaction(SIGXFSZ, nullptr, &current) == 0 && current.sa_handler == SIG_DFL &&
        !(current.sa_flags & SA_SIGINFO))
      ::signal(SIGXFSZ, SIG_IGN);
  });
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  if (path_.empty()) throw Error("cannot write a file with an empty path");
  ignore_file_size_signal();
  temp_ = path_ + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(temp_counter++);
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    int err = errno;
    throw Error("cannot write " + path_ + ": " + errno_text(err));
  }
  buffer_.reserve(kBufferBytes);
}

AtomicFile::~AtomicFile() { abandon(); }

void AtomicFile::abandon() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(temp_.c_str());
  }
  buffer_.clear();
}

void AtomicFile::fail(const std::string& what, int err) {
  abandon();
  throw Error("cannot write " + path_ + ": " + what + ": " + write_error_text(err));
}

void AtomicFile::write_all(const char* p, size_t left) {
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write failed", errno);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

void AtomicFile::flush_buffer() {
  write_all(buffer_.data(), buffer_.size());
  buffer_.clear();
}

void AtomicFile::write(const void* data, size_t bytes) {
  if (fd_ < 0) throw Error("cannot write " + path_ + ": the file was already committed or abandoned");
  const char* p = static_cast<const char*>(data);
  written_ += bytes;
  if (buffer_.size() + bytes > kBufferBytes) flush_buffer();
  if (bytes >= kBufferBytes) {
    write_all(p, bytes);  // large blocks (big tensors) go straight to the file
    return;
  }
  buffer_.insert(buffer_.end(), p, p + bytes);
}

void AtomicFile::commit() {
  if (fd_ < 0) throw Error("cannot write " + path_ + ": the file was already committed or abandoned");
  flush_buffer();
  if (::fsync(fd_) != 0) fail("fsync failed", errno);
  if (::close(fd_) != 0) {
    int err = errno;
    fd_ = -1;
    ::unlink(temp_.c_str());
    throw Error("cannot write " + path_ + ": close failed: " + errno_text(err));
  }
  fd_ = -1;
  if (::rename(temp_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    ::unlink(temp_.c_str());
    throw Error("cannot write " + path_ + ": rename from " + temp_ + " failed: " + errno_text(err));
  }
  fsync_directory(parent_dir(path_));
}

void write_file_atomic(const std::string& path, const void* data, size_t bytes) {
  AtomicFile f(path);
  f.write(data, bytes);
  f.commit();
}

std::string read_file(const std::string& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    throw Error("cannot read " + path + ": " + errno_text(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("cannot read " + path + ": not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    throw Error("cannot read " + path + ": the file is " + std::to_string(st.st_size) + " bytes, more than the " +
                    std::to_string(max_bytes) + " allowed (docs/formats.md, Limits)",
                ErrorKind::bad_input);
  }
  std::string out;
  out.reserve(static_cast<size_t>(st.st_size));
  char chunk[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      throw Error("cannot read " + path + ": " + errno_text(err));
    }
    if (n == 0) break;
    out.append(chunk, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace diffuse
