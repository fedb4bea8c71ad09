// The 64-byte header every packed weight buffer starts with, and its checks shared by all layouts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace edgeopt {

constexpr uint32_t kPackMagic = 0x4b504f45;  // "EOPK" little-endian
constexpr uint32_t kPackVersion = 1;

struct PackHeader {
  uint32_t magic;
  uint32_t version;
  uint32_t format;
  uint32_t nr;
  uint32_t kr;
  uint32_t n;
  uint32_t k;
  uint32_t n_padded;
  uint32_t k_padded;
  uint32_t weight_max;
  uint32_t has_bias;
  uint32_t reserved0;
  uint64_t total_bytes;
  uint64_t reserved1;
};
static_assert(sizeof(PackHeader) == 64, "the header is part of the on-disk format");

// Copies h to the start of a packed buffer, with this build's magic and format version filled in: the
// layouts give the rest (format id, dims, padding, total size).
void write_pack_header(uint8_t* out, PackHeader h);
// Throws std::invalid_argument("edgeopt: packed weights rejected: " + why).
[[noreturn]] void bad_pack(const std::string& why);
// Copies the header out of buf after checking length, magic and version; layout checks are the caller's.
PackHeader read_pack_header(const uint8_t* buf, size_t bytes);

}  // namespace edgeopt
