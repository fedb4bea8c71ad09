// The 64-byte header every packed weight buffer starts with, and its checks shared by all layouts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace edgeopt {

constexpr uint32_t kPackMagic = 0x4b504f45;  // "EOPK" little-endian
// 2: the header carries a checksum of the whole buffer (version 1 buffers had none).
constexpr uint32_t kPackVersion = 2;

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
  // CRC-32 of the whole buffer with this field read as zero, plus kPackSealed: set by seal_pack once the
  // layout has written every byte, checked by verify_pack_checksum when a buffer is loaded.
  uint64_t checksum;
};
static_assert(sizeof(PackHeader) == 64, "the header is part of the on-disk format");

constexpr uint64_t kPackSealed = uint64_t(1) << 63;

// Copies h to the start of a packed buffer, with this build's magic and format version filled in: the
// layouts give the rest (format id, dims, padding, total size). The checksum is left for seal_pack.
void write_pack_header(uint8_t* out, PackHeader h);
// Stores the checksum of buf[0, bytes): every pack function calls it last, after the payload is written.
void seal_pack(uint8_t* buf, size_t bytes);
// Throws (bad_pack) unless buf holds the checksum of its bytes: once per load, O(bytes); the per-call
// header check (read_pack_header) only sees that a buffer was sealed.
void verify_pack_checksum(const uint8_t* buf, size_t bytes);
// Brings buffers of format version 1 (no checksum) to this version in place: buf holds one or more packs back
// to back (a grouped conv has one per group); each version-1 pack gets this version and its checksum. Returns
// how many packs were upgraded (0: none was version 1; a buffer that is not a pack is left for the checks).
// The checksum then vouches for the bytes as loaded, not as packed: the content checks still run after it.
size_t upgrade_pack_version(uint8_t* buf, size_t bytes);
// Throws std::invalid_argument("edgeopt: packed weights rejected: " + why).
[[noreturn]] void bad_pack(const std::string& why);
// Copies the header out of buf after checking length, magic, version and that it was sealed; layout checks
// are the caller's.
PackHeader read_pack_header(const uint8_t* buf, size_t bytes);

}  // namespace edgeopt
