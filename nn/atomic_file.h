// Whole-file writes that never leave a half-written file (docs/design.md §9, §10): bytes go to a
// temporary "<path>.tmp-<pid>-<n>" in the same directory, are fsync'ed, and only then renamed
// over <path>. A crash or an exception leaves either the old file or the new one, never a mix;
// on failure the temporary is removed and a diffuse::Error names the destination path.
// The directory is fsync'ed after the rename so that the rename itself survives a power cut.
// Writing past the file-size limit (RLIMIT_FSIZE, `ulimit -f`) fails with EFBIG and one error
// naming the file: the first AtomicFile ignores SIGXFSZ, whose default action kills the process.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "diffuse/error.h"

namespace diffuse {

// A file being written. Nothing appears at `path` until commit(); destroying an uncommitted
// AtomicFile (e.g. during stack unwinding) removes the temporary and leaves `path` untouched.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);  // creates the temporary; throws if it cannot
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  void commit();   // flush, fsync, rename over the destination, fsync the directory
  void abandon();  // remove the temporary now (the destructor does this too)

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }
  size_t bytes_written() const { return written_; }

 private:
  void flush_buffer();
  void write_all(const char* p, size_t bytes);
  [[noreturn]] void fail(const std::string& what, int err);

  std::string path_, temp_;
  int fd_ = -1;
  std::vector<char> buffer_;  // coalesces small writes (safetensors writes many small tensors)
  size_t written_ = 0;
};

// One-shot helpers.
void write_file_atomic(const std::string& path, const void* data, size_t bytes);
inline void write_file_atomic(const std::string& path, std::string_view bytes) {
  write_file_atomic(path, bytes.data(), bytes.size());
}

// The whole file as bytes; throws diffuse::Error naming the path when it cannot be read, or when
// it is larger than max_bytes (checked before anything is read).
std::string read_file(const std::string& path, size_t max_bytes = SIZE_MAX);

// std::filesystem::create_directories, failing as one diffuse::Error naming the directory and what
// it is for ("the run directory"), ErrorKind::bad_input, not as a std::filesystem_error.
void create_directories(const std::string& dir, const std::string& what);

// A std::filesystem failure that escaped to an exception boundary (a status query on a name over
// NAME_MAX, a loop of links, a directory that cannot be searched) as the one line every other
// failure is: "PATH: reason", ErrorKind::bad_input. The public API and the CLI translate with it.
Error filesystem_failure(const std::filesystem::filesystem_error& e);

// fsync(2) on a directory, so that renames and removals in it are durable. Best effort: some file
// systems refuse fsync on a directory, and nothing can be done about that here.
void fsync_directory(const std::string& dir);

// Sets SIGXFSZ to be ignored (once, and only if it still has its default action), so that a write
// past RLIMIT_FSIZE returns EFBIG instead of killing the process. AtomicFile calls it.
void ignore_file_size_signal();

}  // namespace diffuse
