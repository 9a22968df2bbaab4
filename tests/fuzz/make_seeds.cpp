// Writes the fuzzers' seed corpus: a few tiny valid safetensors and llama2.c files.
// Usage: make_fuzz_seeds OUT_DIR  (creates OUT_DIR/safetensors and OUT_DIR/llama2c)
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

struct Tensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  size_t elem;
};

void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "make_fuzz_seeds: cannot write %s\n", p.c_str());
    std::exit(1);
  }
}

std::string safetensors(const std::vector<Tensor>& ts, bool metadata) {
  nlohmann::json h = nlohmann::json::object();
  if (metadata) h["__metadata__"] = {{"format", "pt"}, {"note", "seed"}};
  std::string data;
  for (const Tensor& t : ts) {
    size_t n = t.elem;
    for (int64_t d : t.shape) n *= size_t(d);
    const size_t begin = data.size();
    for (size_t i = 0; i < n; ++i) data.push_back(char(i * 7 + 1));
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
  }
  std::string json = h.dump();
  while (json.size() % 8) json.push_back(' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((uint64_t(json.size()) >> (8 * i)) & 0xff);
  return out + json + data;
}

std::string llama2c(int32_t dim, int32_t hidden, int32_t layers, int32_t heads, int32_t kv, int32_t vocab,
                    int32_t seq) {
  const int64_t hd = dim / heads, v = vocab < 0 ? -vocab : vocab;
  const int64_t floats =
      v * dim +
      layers * (2 * dim + dim * heads * hd + 2 * dim * kv * hd + heads * hd * dim + 3 * int64_t(dim) * hidden) + dim +
      seq * hd + (vocab < 0 ? v * dim : 0);
  std::string out;
  for (int32_t x : {dim, hidden, layers, heads, kv, vocab, seq})
    for (int i = 0; i < 4; ++i) out.push_back(char((uint32_t(x) >> (8 * i)) & 0xff));
  for (int64_t i = 0; i < floats; ++i) {
    const float f = float(i % 17) * 0.01f;
    out.append(reinterpret_cast<const char*>(&f), sizeof(f));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_seeds OUT_DIR\n");
    return 2;
  }
  const std::filesystem::path root(argv[1]);
  std::filesystem::create_directories(root / "safetensors");
  std::filesystem::create_directories(root / "llama2c");
  write_file(root / "safetensors" / "two_tensors.safetensors",
             safetensors({{"model.norm.weight", "F32", {2, 3}, 4}, {"lm_head.weight", "F16", {4}, 2}}, true));
  write_file(root / "safetensors" / "mixed.safetensors",
             safetensors(
                 {{"a", "BF16", {3, 2}, 2}, {"b", "I64", {2}, 8}, {"empty", "F32", {0, 5}, 4}, {"scalar", "U8", {}, 1}},
                 false));
  write_file(root / "safetensors" / "empty_header.safetensors", safetensors({}, false));
  write_file(root / "llama2c" / "tied.bin", llama2c(8, 16, 1, 2, 1, 4, 4));
  write_file(root / "llama2c" / "untied.bin", llama2c(8, 16, 1, 2, 1, -4, 4));
  write_file(root / "llama2c" / "two_layers.bin", llama2c(4, 4, 2, 1, 1, 3, 2));
  return 0;
}
