#include "io/zip_reader.h"

#include <cstring>
#include <set>

#include "core/error.h"

namespace llmprune {
namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kEnd64Sig = 0x06064b50, kEnd64LocatorSig = 0x07064b50;
constexpr size_t kEndSize = 22, kEnd64LocatorSize = 20, kEnd64Size = 56, kCentralSize = 46, kLocalSize = 30;

// Little-endian reads at a position the caller has bounds-checked.
uint16_t u16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
uint32_t u32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint64_t u64(const uint8_t* p) { return uint64_t(u32(p)) | uint64_t(u32(p + 4)) << 32; }

// True when [off, off + n) lies inside [0, size), without overflow.
bool in_range(uint64_t off, uint64_t n, uint64_t size) { return off <= size && n <= size - off; }

}  // namespace

bool looks_like_zip(const uint8_t* data, size_t size) { return size >= 4 && u32(data) == kLocalSig; }

std::vector<ZipMember> read_zip_directory(const uint8_t* data, size_t size, const std::string& file) {
  auto bad = [&](const std::string& what) { return input_error(file, "zip archive: " + what); };
  if (size < kEndSize) throw bad("too short (" + std::to_string(size) + " bytes; truncated?)");
  // The end record is the last 22 bytes plus a comment of up to 65535 bytes.
  size_t end = SIZE_MAX;
  const size_t lowest = size - kEndSize > 65535 ? size - kEndSize - 65535 : 0;
  for (size_t p = size - kEndSize + 1; p-- > lowest;) {
    if (u32(data + p) == kEndSig && p + kEndSize + u16(data + p + 20) == size) {
      end = p;
      break;
    }
  }
  if (end == SIZE_MAX) throw bad("no end of central directory record (truncated?)");
  const uint8_t* e = data + end;
  uint64_t n_entries = u16(e + 10), cd_size = u32(e + 12), cd_offset = u32(e + 16);
  if (u16(e + 4) != 0 || u16(e + 6) != 0 || u16(e + 8) != u16(e + 10)) throw bad("multi-disk archives are not supported");
  if (end >= kEnd64LocatorSize && u32(data + end - kEnd64LocatorSize) == kEnd64LocatorSig) {
    const uint8_t* loc = data + end - kEnd64LocatorSize;
    const uint64_t rec = u64(loc + 8);
    if (u32(loc + 4) != 0 || u32(loc + 16) > 1) throw bad("multi-disk archives are not supported");
    if (!in_range(rec, kEnd64Size, end - kEnd64LocatorSize) || u32(data + rec) != kEnd64Sig)
      throw bad("zip64 end of central directory record missing or out of range");
    const uint8_t* r = data + rec;
    if (u32(r + 16) != 0 || u32(r + 20) != 0 || u64(r + 24) != u64(r + 32)) throw bad("multi-disk archives are not supported");
    n_entries = u64(r + 32);
    cd_size = u64(r + 40);
    cd_offset = u64(r + 48);
  } else if (n_entries == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {
    throw bad("zip64 sizes without a zip64 end of central directory locator");
  }
  if (!in_range(cd_offset, cd_size, end)) throw bad("central directory lies outside the file (truncated?)");
  if (n_entries > cd_size / kCentralSize) throw bad(std::to_string(n_entries) + " entries cannot fit in a central directory of " + std::to_string(cd_size) + " bytes");

  std::vector<ZipMember> out;
  std::set<std::string> names;
  uint64_t pos = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < n_entries; i++) {
    if (!in_range(pos, kCentralSize, cd_end) || u32(data + pos) != kCentralSig)
      throw bad("central directory entry " + std::to_string(i) + " is damaged");
    const uint8_t* c = data + pos;
    const uint16_t flags = u16(c + 8), method = u16(c + 10), name_len = u16(c + 28), extra_len = u16(c + 30), comment_len = u16(c + 32);
    uint64_t comp = u32(c + 20), uncomp = u32(c + 24), local = u32(c + 42);
    uint32_t disk = u16(c + 34);
    if (!in_range(pos + kCentralSize, uint64_t(name_len) + extra_len + comment_len, cd_end))
      throw bad("central directory entry " + std::to_string(i) + " runs past the directory");
    ZipMember m;
    m.name.assign(reinterpret_cast<const char*>(c + kCentralSize), name_len);
    const std::string member = "member '" + printable_name(m.name) + "'", where = member + ": ";
    // Zip64 extended information: the 64-bit values of the fields saturated at 0xffff...
    const uint8_t* x = c + kCentralSize + name_len;
    for (size_t k = 0; k + 4 <= extra_len;) {
      const uint16_t id = u16(x + k), len = u16(x + k + 2);
      if (k + 4 + len > extra_len) throw bad(where + "extra field runs past its entry");
      if (id == 0x0001) {
        const uint8_t* z = x + k + 4;
        size_t zl = len;
        auto take64 = [&](uint64_t* v) {
          if (zl < 8) throw bad(where + "zip64 extra field too short");
          *v = u64(z);
          z += 8;
          zl -= 8;
        };
        if (uncomp == 0xffffffff) take64(&uncomp);
        if (comp == 0xffffffff) take64(&comp);
        if (local == 0xffffffff) take64(&local);
        if (disk == 0xffff) {
          if (zl < 4) throw bad(where + "zip64 extra field too short");
          disk = u32(z);
        }
      }
      k += 4 + size_t(len);
    }
    if (disk != 0) throw bad(where + "multi-disk archives are not supported");
    if (flags & 1) throw bad(member + " is encrypted");
    if (method != 0)
      throw bad(member + " is compressed (method " + std::to_string(method) +
                "); torch.save writes members uncompressed (stored): re-save the checkpoint with torch.save");
    if (comp != uncomp) throw bad(where + "stored member with compressed size " + std::to_string(comp) + " != size " + std::to_string(uncomp));
    if (!in_range(local, kLocalSize, cd_offset) || u32(data + local) != kLocalSig)
      throw bad(where + "local header missing or out of range");
    const uint8_t* l = data + local;
    const uint64_t data_off = local + kLocalSize + u16(l + 26) + u16(l + 28);
    if (u16(l + 26) != name_len || std::memcmp(l + kLocalSize, c + kCentralSize, name_len) != 0)
      throw bad(where + "local header names a different member");
    if (!in_range(data_off, uncomp, cd_offset))
      throw bad(where + std::to_string(uncomp) + " bytes at offset " + std::to_string(data_off) + " run past the archive's data (truncated?)");
    m.data_offset = data_off;
    m.size = uncomp;
    if (!names.insert(m.name).second) throw bad(member + " appears twice");
    out.push_back(std::move(m));
    pos += kCentralSize + name_len + extra_len + comment_len;
  }
  return out;
}

}  // namespace llmprune
