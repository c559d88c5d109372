// SPDX-License-Identifier: MIT
// MappedFile: the read-only bytes of a whole file. On POSIX systems the file is
// memory-mapped (mmap, PROT_READ, MAP_PRIVATE), so opening a multi-gigabyte
// checkpoint costs nothing until its pages are touched; where mapping is not
// available or fails (some network or virtual file systems, 32-bit address
// space exhaustion) the bytes are read into memory instead, with the same
// interface. A MappedFile can also own a buffer given by the caller (parsers
// that work from memory, fuzzers). It is move-only; data() stays valid across
// moves, for as long as the object (or the one it was moved into) lives.
//
// NOTE: a mapped file that another process truncates while it is mapped makes
// reads of the lost pages raise SIGBUS; this is inherent to mmap (every mmap
// reader shares it). Use FileAccess::read where that can happen.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "../core/error.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define MOEKIT_IO_HAVE_MMAP 1
#else
#include <fstream>
#define MOEKIT_IO_HAVE_MMAP 0
#endif

MOEKIT_NAMESPACE_BEGIN

/// How a file's bytes are brought into memory.
enum class FileAccess : std::uint8_t {
  map,   ///< memory-map the file; fall back to reading it if mapping fails
  read,  ///< read the whole file into memory
};

/// The read-only bytes of a whole file, mapped or owned.
class MappedFile {
 public:
  MappedFile() = default;

  /// Opens `path` and maps it (or reads it, see FileAccess). Throws moekit::Error
  /// naming the path when it cannot be opened, is not a regular file, or cannot be read.
  static MappedFile open(const std::string& path, FileAccess access = FileAccess::map) {
    MappedFile f;
    f.path_ = path;
    f.load(access);
    return f;
  }

  /// Takes ownership of `bytes`; `name` stands for the path in messages.
  static MappedFile from_bytes(std::vector<std::uint8_t> bytes, std::string name = "<memory>") {
    MappedFile f;
    f.path_ = std::move(name);
    f.owned_ = std::move(bytes);
    f.data_ = f.owned_.data();
    f.size_ = f.owned_.size();
    return f;
  }

  /// Copies `size` bytes from `data` into a buffer the MappedFile owns.
  static MappedFile copy_of(const void* data, std::size_t size, std::string name = "<memory>") {
    const auto* p = static_cast<const std::uint8_t*>(data);
    return from_bytes(std::vector<std::uint8_t>(p, p + size), std::move(name));
  }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept { take(other); }
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      release();
      take(other);
    }
    return *this;
  }
  ~MappedFile() { release(); }

  /// First byte ([size()] bytes follow); may be null when size() == 0.
  const std::uint8_t* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  /// True when the bytes are a memory mapping of the file (not a copy).
  bool is_mapped() const noexcept { return map_ != nullptr; }
  /// The path given to open(), or the name given to from_bytes()/copy_of().
  const std::string& path() const noexcept { return path_; }

 private:
  void take(MappedFile& o) noexcept {
    path_ = std::move(o.path_);
    owned_ = std::move(o.owned_);
    map_ = o.map_;
    map_size_ = o.map_size_;
    size_ = o.size_;
    data_ = map_ != nullptr ? static_cast<const std::uint8_t*>(map_) : owned_.data();
    o.map_ = nullptr;
    o.map_size_ = 0;
    o.data_ = nullptr;
    o.size_ = 0;
    o.owned_.clear();
  }

  void release() noexcept {
#if MOEKIT_IO_HAVE_MMAP
    if (map_ != nullptr) ::munmap(map_, map_size_);
#endif
    map_ = nullptr;
    map_size_ = 0;
    data_ = nullptr;
    size_ = 0;
    owned_.clear();
  }

  [[noreturn]] void fail_errno(const char* what, int err) const {
    detail::fail("cannot ", what, " '", path_, "': ", std::generic_category().message(err));
  }

#if MOEKIT_IO_HAVE_MMAP
  // Closes a file descriptor when it goes out of scope.
  struct Fd {
    int fd;
    ~Fd() {
      if (fd >= 0) ::close(fd);
    }
  };

  void load(FileAccess access) {
    int flags = O_RDONLY;
#ifdef O_CLOEXEC
    flags |= O_CLOEXEC;
#endif
    Fd fd{::open(path_.c_str(), flags)};
    if (fd.fd < 0) fail_errno("open", errno);
    struct stat st {};
    if (::fstat(fd.fd, &st) != 0) fail_errno("stat", errno);
    if (!S_ISREG(st.st_mode)) detail::fail("cannot read '", path_, "': not a regular file");
    if (st.st_size < 0) detail::fail("cannot read '", path_, "': negative file size");
    const auto size64 = static_cast<std::uint64_t>(st.st_size);
    if (size64 > static_cast<std::uint64_t>(static_cast<std::size_t>(-1) / 2))
      detail::fail("cannot read '", path_, "': ", size64, " bytes do not fit in memory");
    const auto size = static_cast<std::size_t>(size64);
    if (size == 0) return;  // nothing to map; data() stays null

    if (access == FileAccess::map) {
      void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
      if (p != MAP_FAILED) {
        map_ = p;
        map_size_ = size;
        data_ = static_cast<const std::uint8_t*>(p);
        size_ = size;
        return;
      }
      // Fall through: read the file instead.
    }
    owned_.resize(size);
    std::size_t done = 0;
    while (done < size) {
      const ::ssize_t n = ::pread(fd.fd, owned_.data() + done, size - done,
                                  static_cast<::off_t>(done));
      if (n < 0) {
        if (errno == EINTR) continue;
        fail_errno("read", errno);
      }
      if (n == 0)
        detail::fail("cannot read '", path_, "': the file ended after ", done, " of ", size,
                     " bytes (was it truncated while being read?)");
      done += static_cast<std::size_t>(n);
    }
    data_ = owned_.data();
    size_ = size;
  }
#else
  void load(FileAccess) {
    std::ifstream in(path_, std::ios::binary | std::ios::ate);
    if (!in) detail::fail("cannot open '", path_, "'");
    const std::streamoff end = in.tellg();
    if (end < 0) detail::fail("cannot determine the size of '", path_, "'");
    owned_.resize(static_cast<std::size_t>(end));
    in.seekg(0, std::ios::beg);
    if (end > 0 && !in.read(reinterpret_cast<char*>(owned_.data()), end))
      detail::fail("cannot read ", end, " bytes from '", path_, "'");
    data_ = owned_.data();
    size_ = owned_.size();
  }
#endif

  std::string path_;
  std::vector<std::uint8_t> owned_;
  void* map_ = nullptr;
  std::size_t map_size_ = 0;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

MOEKIT_NAMESPACE_END
