#pragma once
// Read-only memory map of a whole file (POSIX mmap), RAII. No LibTorch.
#include <cstddef>
#include <cstdint>
#include <string>

namespace gear {

class MappedFile {
 public:
  // Throws gear::Error naming `path` when it is missing, a directory (or not a regular file),
  // unreadable, empty, or cannot be mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }  // page-aligned
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace gear
