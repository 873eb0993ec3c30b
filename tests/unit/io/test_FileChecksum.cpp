// io::fileChecksum (ISA-L crc32_gzip_refl, read in blocks) gives zlib's crc32 of the whole file:
// the value is stored in outputs and checkpoints, so it must never change.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "TempDir.h"
#include "safeclip/io/Checkpoint.h"
#include "safeclip/kernel/Error.h"

using namespace safeclip;
using safeclip::test::TempDir;

namespace {

std::vector<unsigned char> randomBytes(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<unsigned char> v(n);
    for (auto& b : v) {
        b = static_cast<unsigned char>(rng() >> 24);
    }
    return v;
}

std::string writeBytes(const TempDir& dir, const std::string& name, const std::vector<unsigned char>& bytes) {
    const std::string p = dir.file(name);
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(out.good()) << p;
    return p;
}

/// The reference: zlib's crc32 of the bytes in one call, formatted as fileChecksum formats it.
std::string zlibChecksum(const std::vector<unsigned char>& bytes) {
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32_z(crc, bytes.data(), bytes.size());
    char out[32];
    std::snprintf(out, sizeof out, "crc32:%08lx", static_cast<unsigned long>(crc));
    return out;
}

}  // namespace

TEST(FileChecksum, EqualsZlibCrc32ForManySizes) {
    TempDir dir;
    constexpr std::size_t kKiB = 1024;
    constexpr std::size_t kMiB = 1024 * kKiB;
    // Empty, tiny, around the ISA-L folding widths and around 256 KiB / 4 MiB read blocks, ~9 MiB.
    const std::vector<std::size_t> sizes = {0,
                                            1,
                                            2,
                                            15,
                                            16,
                                            17,
                                            63,
                                            64,
                                            65,
                                            255,
                                            256 * kKiB - 1,
                                            256 * kKiB,
                                            256 * kKiB + 1,
                                            4 * kMiB - 1,
                                            4 * kMiB,
                                            4 * kMiB + 3,
                                            9 * kMiB + 12345};
    unsigned seed = 1;
    for (const std::size_t n : sizes) {
        const std::vector<unsigned char> bytes = randomBytes(n, seed++);
        const std::string p = writeBytes(dir, std::to_string(n) + ".bin", bytes);
        EXPECT_EQ(io::fileChecksum(p), zlibChecksum(bytes)) << n << " bytes";
    }
}

TEST(FileChecksum, KnownValues) {
    TempDir dir;
    EXPECT_EQ(io::fileChecksum(dir.write("empty", "")), "crc32:00000000");
    EXPECT_EQ(io::fileChecksum(dir.write("check", "123456789")), "crc32:cbf43926");  // CRC-32 check value
    // All-zero and all-0xff data (the init/final xor conventions would show here).
    EXPECT_EQ(io::fileChecksum(writeBytes(dir, "zeros", std::vector<unsigned char>(1 << 20, 0))),
              zlibChecksum(std::vector<unsigned char>(1 << 20, 0)));
    EXPECT_EQ(io::fileChecksum(writeBytes(dir, "ones", std::vector<unsigned char>(300001, 0xff))),
              zlibChecksum(std::vector<unsigned char>(300001, 0xff)));
}

TEST(FileChecksum, UnreadablePathThrowsNamingTheFile) {
    TempDir dir;
    for (const std::string& p :
         {dir.file("no-such-warp.fits"), dir.path().string() /* a directory: read fails */}) {
        try {
            (void)io::fileChecksum(p);
            ADD_FAILURE() << "no exception for " << p;
        } catch (const InputError& e) {
            EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
        }
    }
}
