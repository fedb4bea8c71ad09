#include "pack/pack_header.h"

#include <array>
#include <cstddef>
#include <cstring>
#include <stdexcept>

namespace edgeopt {

namespace {

constexpr size_t kChecksumOffset = offsetof(PackHeader, checksum);

// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), slicing by 8: eight table lookups per 8 bytes,
// ~1-2 GB/s, so checking a ResNet-50's weights at load costs tens of milliseconds. A CRC detects every
// burst of up to 32 flipped bits, which a sum or a multiply-xor hash does not guarantee.
using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int b = 0; b < 8; ++b) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[0][i] = c;
  }
  for (size_t s = 1; s < 8; ++s)
    for (uint32_t i = 0; i < 256; ++i) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  return t;
}

constexpr Tables kCrcTables = make_tables();

uint32_t crc32_update(uint32_t crc, const uint8_t* p, size_t n) {
  const Tables& t = kCrcTables;
  crc = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);  // little-endian x86: byte 0 in the low bits
    std::memcpy(&hi, p + 4, 4);
    lo ^= crc;
    crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
          t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
  }
  for (; n > 0; --n, ++p) crc = t[0][(crc ^ *p) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

// The checksum of a whole buffer, its checksum field read as zero.
uint64_t buffer_checksum(const uint8_t* buf, size_t bytes) {
  static constexpr uint8_t kZero[sizeof(uint64_t)] = {};
  uint32_t crc = crc32_update(0, buf, kChecksumOffset);
  crc = crc32_update(crc, kZero, sizeof kZero);
  crc = crc32_update(crc, buf + sizeof(PackHeader), bytes - sizeof(PackHeader));
  return kPackSealed | crc;
}

}  // namespace

void write_pack_header(uint8_t* out, PackHeader h) {
  h.magic = kPackMagic;
  h.version = kPackVersion;
  h.checksum = 0;
  std::memcpy(out, &h, sizeof h);
}

void seal_pack(uint8_t* buf, size_t bytes) {
  if (bytes < sizeof(PackHeader)) throw std::logic_error("edgeopt: seal_pack on a buffer shorter than the header");
  const uint64_t sum = buffer_checksum(buf, bytes);
  std::memcpy(buf + kChecksumOffset, &sum, sizeof sum);
}

void verify_pack_checksum(const uint8_t* buf, size_t bytes) {
  const PackHeader h = read_pack_header(buf, bytes);
  if (h.checksum != buffer_checksum(buf, bytes))
    bad_pack("checksum mismatch: the bytes changed after packing (a damaged or edited file?); re-create the "
             "module from the float model");
}

size_t upgrade_pack_version(uint8_t* buf, size_t bytes) {
  constexpr uint32_t kUnsealedVersion = 1;
  size_t upgraded = 0;
  for (size_t off = 0; bytes - off >= sizeof(PackHeader);) {
    PackHeader h;
    std::memcpy(&h, buf + off, sizeof h);
    if (h.magic != kPackMagic || h.version != kUnsealedVersion || h.checksum != 0 || h.total_bytes < sizeof h ||
        h.total_bytes > bytes - off)
      break;
    h.version = kPackVersion;
    std::memcpy(buf + off, &h, sizeof h);
    seal_pack(buf + off, size_t(h.total_bytes));
    off += size_t(h.total_bytes);
    ++upgraded;
  }
  return upgraded;
}

void bad_pack(const std::string& why) { throw std::invalid_argument("edgeopt: packed weights rejected: " + why); }

PackHeader read_pack_header(const uint8_t* buf, size_t bytes) {
  if (bytes < sizeof(PackHeader)) bad_pack("buffer of " + std::to_string(bytes) + " bytes is shorter than the header");
  PackHeader h;
  std::memcpy(&h, buf, sizeof h);
  if (h.magic != kPackMagic) bad_pack("bad magic (not an edgeopt packed weight buffer)");
  if (h.version != kPackVersion)
    bad_pack("format version " + std::to_string(h.version) + ", this build reads version " +
             std::to_string(kPackVersion) + "; re-create the module from the float model");
  if (!(h.checksum & kPackSealed)) bad_pack("the buffer was never sealed (its pack function did not call seal_pack)");
  return h;
}

}  // namespace edgeopt
