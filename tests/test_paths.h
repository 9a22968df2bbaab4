#pragma once
// Where tests find ../shared. Tests that need it skip (with a visible warning) when it is absent,
// as on a user's machine; CI always has it.
#include <catch2/catch.hpp>

#include <ftw.h>
#include <stdio.h>

#include <filesystem>
#include <string>

namespace gear::test {

inline std::string shared(const std::string& rel) { return std::string(GEARLAB_SHARED_DIR) + "/" + rel; }

inline bool have_shared(const std::string& rel) {
  if (std::filesystem::exists(shared(rel))) return true;
  WARN("SKIPPED: " << shared(rel) << " not found (../shared is missing)");
  return false;
}

// A fresh scratch directory under the build tree for files a test writes.
// Removes a directory tree with POSIX nftw rather than std::filesystem::remove_all: PyTorch's CUDA
// wheel (the GPU build's LibTorch) exports std::filesystem symbols of an older libstdc++ ABI that
// the dynamic linker binds our calls to, and remove_all of a non-empty directory then jumps to a
// null pointer (seen on the H100 machine, Ubuntu 24.04, torch 2.11).
inline void remove_tree(const std::string& dir) {
  nftw(
      dir.c_str(), [](const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

inline std::string scratch_dir(const std::string& name) {
  auto dir = std::filesystem::path(GEARLAB_BINARY_DIR) / "test-scratch" / name;
  remove_tree(dir.string());
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace gear::test
