#include "pack/pack_header.h"

#include <cstring>
#include <stdexcept>

namespace edgeopt {

void write_pack_header(uint8_t* out, PackHeader h) {
  h.magic = kPackMagic;
  h.version = kPackVersion;
  std::memcpy(out, &h, sizeof h);
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
  return h;
}

}  // namespace edgeopt
