// safetensors parsing (core/io/format), the mapped file and the float32 reader.
#include <ATen/ATen.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "core/io/format/mapped_file.h"
#include "core/io/format/safetensors_format.h"
#include "core/io/safetensors_reader.h"
#include "io/io_testing.h"
#include "io/safetensors_writer.h"
#include "test_paths.h"

using gear::test::error_of;

namespace {

std::string path_in(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

// The error opening a file with this header text and data section.
std::string open_error(const std::string& dir, const std::string& name, const std::string& header,
                       const std::string& data = std::string(64, '\0'), int64_t declared_length = -1) {
  const std::string path = path_in(dir, name);
  gear::test::write_raw_safetensors(path, header, data, declared_length);
  return error_of([&] { gear::SafetensorsFile f(path); });
}

}  // namespace

TEST_CASE("safetensors: F32, F16 and BF16 tensors read back as float32") {
  const std::string dir = gear::test::scratch_dir("st_roundtrip");
  at::manual_seed(1);
  const at::Tensor a = at::randn({3, 5}), b = at::randn({7}), c = at::randn({2, 2, 3});
  const std::string path = path_in(dir, "t.safetensors");
  gear::test::write_safetensors(
      path,
      {gear::test::st_tensor("a", a, "F32"), gear::test::st_tensor("b", b, "F16"),
       gear::test::st_tensor("c", c, "BF16"), gear::test::st_tensor("empty", at::zeros({0, 4}), "F32"),
       gear::test::st_tensor("scalar", at::full({}, 2.5), "F32")},
      {{"format", "pt"}});
  gear::SafetensorsFile f(path);
  CHECK(f.names() == std::vector<std::string>{"a", "b", "c", "empty", "scalar"});
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.info("c").dtype == gear::StDtype::BF16);
  CHECK(f.info("c").shape == std::vector<int64_t>{2, 2, 3});
  CHECK(f.info("c").length == 24);

  const at::Tensor ra = f.tensor("a"), rb = f.tensor("b"), rc = f.tensor("c");
  CHECK(ra.scalar_type() == at::kFloat);
  CHECK(rb.scalar_type() == at::kFloat);
  CHECK(rc.scalar_type() == at::kFloat);
  CHECK(at::equal(ra, a));
  CHECK(at::equal(rb, b.to(at::kHalf).to(at::kFloat)));
  CHECK(at::equal(rc, c.to(at::kBFloat16).to(at::kFloat)));
  CHECK(f.tensor("empty").sizes().vec() == std::vector<int64_t>{0, 4});
  CHECK(f.tensor("scalar").dim() == 0);
  CHECK(f.tensor("scalar").item<float>() == 2.5f);
}

TEST_CASE("safetensors: tensors outlive the file they came from") {
  const std::string dir = gear::test::scratch_dir("st_outlive");
  const at::Tensor a = at::arange(12, at::kFloat).reshape({3, 4});
  const std::string path = path_in(dir, "t.safetensors");
  gear::test::write_safetensors(path, {gear::test::st_tensor("a", a)});
  at::Tensor got;
  {
    gear::SafetensorsFile f(path);
    got = f.tensor("a");
  }
  std::filesystem::remove(path);
  CHECK(at::equal(got, a));
}

TEST_CASE("safetensors: data at an unaligned offset reads correctly") {
  const std::string dir = gear::test::scratch_dir("st_unaligned");
  at::manual_seed(2);
  const at::Tensor a = at::randn({4, 3}), b = at::randn({5});
  const std::string path = path_in(dir, "u.safetensors");
  gear::test::write_safetensors(path, {gear::test::st_tensor("a", a, "F32"), gear::test::st_tensor("b", b, "F16")}, {},
                                /*misalign=*/true);
  gear::SafetensorsFile f(path);
  CHECK(f.info("a").offset % 2 == 1);
  CHECK(at::equal(f.tensor("a"), a));
  CHECK(at::equal(f.tensor("b"), b.to(at::kHalf).to(at::kFloat)));
}

TEST_CASE("safetensors: integer tensors parse but do not load as weights") {
  const std::string dir = gear::test::scratch_dir("st_int");
  const std::string path = path_in(dir, "i.safetensors");
  gear::test::write_safetensors(path, {gear::test::st_tensor("ids", at::arange(6, at::kLong), "I64")});
  gear::SafetensorsFile f(path);
  CHECK(f.info("ids").dtype == gear::StDtype::I64);
  CHECK(f.info("ids").length == 48);
  CHECK_ERROR_NAMES(error_of([&] { f.tensor("ids"); }), path, "ids", "I64", "floating-point");
  CHECK_ERROR_NAMES(error_of([&] { f.tensor("nope"); }), path, "tensor nope not found");
}

TEST_CASE("safetensors: corrupt files give errors naming the file and the problem") {
  const std::string dir = gear::test::scratch_dir("st_corrupt");
  const std::string ok_entry = R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}})";

  SECTION("empty file") {
    const std::string path = path_in(dir, "empty.safetensors");
    gear::test::write_bytes(path, "");
    CHECK_ERROR_NAMES(error_of([&] { gear::SafetensorsFile f(path); }), path, "empty file");
    CHECK_ERROR_NAMES(error_of([&] { gear::parse_safetensors(nullptr, 0, "x.safetensors"); }), "x.safetensors",
                      "empty file");
  }
  SECTION("shorter than the length field") {
    const std::string path = path_in(dir, "short.safetensors");
    gear::test::write_bytes(path, "abc");
    CHECK_ERROR_NAMES(error_of([&] { gear::SafetensorsFile f(path); }), path, "too short");
  }
  SECTION("header length beyond the file") {
    CHECK_ERROR_NAMES(open_error(dir, "len.safetensors", ok_entry, std::string(16, '\0'), 100000), "len.safetensors",
                      "header length 100000 is beyond the end of the file");
    CHECK_ERROR_NAMES(open_error(dir, "len2.safetensors", ok_entry, "", int64_t(1) << 62), "len2.safetensors",
                      "beyond the end of the file");
  }
  SECTION("header not JSON") {
    CHECK_ERROR_NAMES(open_error(dir, "notjson.safetensors", "{\"w\": [1, 2"), "notjson.safetensors", "not valid JSON");
    CHECK_ERROR_NAMES(open_error(dir, "garbage.safetensors", std::string("\x89PNG\r\n\x1a\n", 8)),
                      "garbage.safetensors", "not valid JSON");
    CHECK_ERROR_NAMES(open_error(dir, "utf8.safetensors", "{\"w\xff\xfe\": {}}"), "utf8.safetensors", "not valid JSON");
    CHECK_ERROR_NAMES(open_error(dir, "array.safetensors", "[1, 2, 3]"), "array.safetensors", "must be a JSON object");
    CHECK_ERROR_NAMES(open_error(dir, "deep.safetensors", std::string(5000, '[') + std::string(5000, ']')),
                      "deep.safetensors", "nested deeper");
  }
  SECTION("offsets out of range") {
    CHECK_ERROR_NAMES(open_error(dir, "range.safetensors", ok_entry, std::string(12, '\0')), "range.safetensors",
                      "tensor 'w'", "out of range", "12 bytes");
    CHECK_ERROR_NAMES(
        open_error(dir, "order.safetensors", R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})"),
        "order.safetensors", "tensor 'w'", "begin 8 is after end 4");
    CHECK_ERROR_NAMES(
        open_error(dir, "neg.safetensors", R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})"),
        "neg.safetensors", "tensor 'w'", "must not be negative");
    CHECK_ERROR_NAMES(open_error(dir, "huge.safetensors",
                                 R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 18446744073709551615]}})"),
                      "huge.safetensors", "tensor 'w'", "out of range");
  }
  SECTION("overlapping tensors") {
    const std::string h = R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                              "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})";
    CHECK_ERROR_NAMES(open_error(dir, "overlap.safetensors", h, std::string(24, '\0')), "overlap.safetensors", "'a'",
                      "'b'", "overlap");
  }
  SECTION("byte span does not match the shape") {
    const std::string h = R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})";
    CHECK_ERROR_NAMES(open_error(dir, "span.safetensors", h), "span.safetensors", "tensor 'w'", "12 bytes",
                      "needs 16 bytes");
    const std::string h16 = R"({"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 12]}})";
    CHECK_ERROR_NAMES(open_error(dir, "span16.safetensors", h16), "span16.safetensors", "needs 6 bytes");
  }
  SECTION("bad entries") {
    CHECK_ERROR_NAMES(
        open_error(dir, "dtype.safetensors", R"({"w": {"dtype": "Q4_K", "shape": [2], "data_offsets": [0, 2]}})"),
        "dtype.safetensors", "tensor 'w'", "unknown dtype \"Q4_K\"");
    CHECK_ERROR_NAMES(open_error(dir, "nodtype.safetensors", R"({"w": {"shape": [2], "data_offsets": [0, 8]}})"),
                      "nodtype.safetensors", "tensor 'w'", "missing \"dtype\"");
    CHECK_ERROR_NAMES(open_error(dir, "noshape.safetensors", R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})"),
                      "noshape.safetensors", "missing \"shape\"");
    CHECK_ERROR_NAMES(open_error(dir, "nooffs.safetensors", R"({"w": {"dtype": "F32", "shape": [2]}})"),
                      "nooffs.safetensors", "missing \"data_offsets\"");
    CHECK_ERROR_NAMES(
        open_error(dir, "negdim.safetensors", R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})"),
        "negdim.safetensors", "tensor 'w'", "shape dimension must not be negative");
    CHECK_ERROR_NAMES(
        open_error(dir, "fdim.safetensors", R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})"),
        "fdim.safetensors", "must be an integer");
    CHECK_ERROR_NAMES(
        open_error(dir, "bigdim.safetensors",
                   R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})"),
        "bigdim.safetensors", "more elements than fit in int64");
    CHECK_ERROR_NAMES(
        open_error(dir, "offs3.safetensors", R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}})"),
        "offs3.safetensors", "must be an array [begin, end]");
    CHECK_ERROR_NAMES(open_error(dir, "meta.safetensors", R"({"__metadata__": {"format": 1}})"), "meta.safetensors",
                      "\"__metadata__\" entry \"format\" must be a string");
    CHECK_ERROR_NAMES(open_error(dir, "entry.safetensors", R"({"w": 7})"), "entry.safetensors",
                      "tensor 'w': entry must be an object");
  }
}

TEST_CASE("safetensors: header padding and empty headers are accepted") {
  const std::string dir = gear::test::scratch_dir("st_padding");
  const std::string path = path_in(dir, "p.safetensors");
  gear::test::write_raw_safetensors(path, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}    )",
                                    std::string(4, '\0'));
  CHECK(gear::SafetensorsFile(path).names() == std::vector<std::string>{"w"});
  gear::test::write_raw_safetensors(path, "{}", "");
  CHECK(gear::SafetensorsFile(path).names().empty());
}

TEST_CASE("mapped file: clear errors for missing, directory, empty and unreadable paths") {
  const std::string dir = gear::test::scratch_dir("mapped_file");
  CHECK_ERROR_NAMES(error_of([&] { gear::MappedFile f(dir + "/missing.bin"); }), dir + "/missing.bin",
                    "no such file");
  CHECK_ERROR_NAMES(error_of([&] { gear::MappedFile f(dir); }), dir, "is a directory");
  const std::string empty = path_in(dir, "empty.bin");
  gear::test::write_bytes(empty, "");
  CHECK_ERROR_NAMES(error_of([&] { gear::MappedFile f(empty); }), empty, "empty file");

  const std::string ok = path_in(dir, "ok.bin");
  gear::test::write_bytes(ok, "hello");
  gear::MappedFile f(ok);
  REQUIRE(f.size() == 5);
  CHECK(std::string(reinterpret_cast<const char*>(f.data()), f.size()) == "hello");
  gear::MappedFile moved(std::move(f));
  CHECK(moved.size() == 5);
  CHECK(f.data() == nullptr);

  if (::geteuid() != 0) {  // root reads anything
    std::filesystem::permissions(ok, std::filesystem::perms::none);
    CHECK_ERROR_NAMES(error_of([&] { gear::MappedFile g(ok); }), ok, "cannot open for reading");
    std::filesystem::permissions(ok, std::filesystem::perms::owner_all);
  }
}
