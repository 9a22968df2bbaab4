// What a --model argument names: "gen:<shape>", a Hugging Face directory or a llama2.c .bin.
#include <filesystem>

#include "core/io/format/llama2c_format.h"
#include "core/io/format/mapped_file.h"
#include "core/io/generated.h"
#include "core/io/hf_loader.h"
#include "core/io/loader.h"
#include "core/util/error.h"

namespace gear {
namespace {

namespace fs = std::filesystem;

enum class Kind { Generated, HfDirectory, Llama2c };

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

const char* kExpected = "expected a llama2.c .bin checkpoint, a Hugging Face model directory, or gen:<shape>";

Kind classify(const std::string& path) {
  if (path.rfind("gen:", 0) == 0) return Kind::Generated;
  require(!path.empty(), std::string("no model path given (") + kExpected + ")");
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  require(fs::exists(st), path + ": no such file or directory (" + kExpected + ")");
  if (fs::is_directory(st)) return Kind::HfDirectory;
  require(fs::is_regular_file(st), path + ": not a regular file or directory (" + kExpected + ")");
  if (ends_with(path, ".bin")) return Kind::Llama2c;
  if (ends_with(path, ".safetensors") || ends_with(path, ".json"))
    fail(path +
         ": point the model path at the Hugging Face directory that holds this file (with config.json), "
         "not at the file itself");
  fail(path + ": unrecognised model file (" + kExpected + ")");
}

}  // namespace

Weights load_weights(const std::string& path, const std::string& device, const std::string& dtype) {
  switch (classify(path)) {
    case Kind::Generated:
      return generate_weights(path.substr(4), device, dtype);
    case Kind::HfDirectory:
      return load_hf_directory(path);
    case Kind::Llama2c:
      return load_llama2c(path);
  }
  fail(path + ": unreachable");
}

ModelConfig load_config(const std::string& path) {
  switch (classify(path)) {
    case Kind::Generated:
      return generated_config(path.substr(4));
    case Kind::HfDirectory:
      return load_hf_config(path);
    case Kind::Llama2c: {
      const MappedFile file(path);  // only the header page is ever touched
      return parse_llama2c(file.data(), file.size(), path).config;
    }
  }
  fail(path + ": unreachable");
}

}  // namespace gear
