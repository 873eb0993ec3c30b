// io::fileChecksum (ISA-L crc32_gzip_refl, read in blocks) gives zlib's crc32 of the whole file:
// the value is stored in outputs and checkpoints, so it must never change.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
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

namespace {

/// Big-endian bytes of a float32 (FITS order).
void putFloat(std::vector<unsigned char>& bytes, std::size_t at, float v) {
    std::uint32_t u = 0;
    std::memcpy(&u, &v, 4);
    for (int k = 0; k < 4; ++k) {
        bytes[at + static_cast<std::size_t>(k)] = static_cast<unsigned char>(u >> (24 - 8 * k));
    }
}

}  // namespace

TEST(FileChecksum, ScanFindsTheOneValueThatIsNotNaNAcrossBlocks) {
    // io::scanFile: the same checksum, and whether a range of big-endian float32 holds a value that
    // is not NaN. The range starts at 2880 (a FITS data unit) and spans several 256 KiB read blocks.
    TempDir dir;
    const std::size_t start = 2880;
    const std::size_t count = 200000;  // 800,000 bytes: 4 blocks
    std::vector<unsigned char> bytes = randomBytes(start + count * 4 + 2000, 9);
    const float qnan = std::numeric_limits<float>::quiet_NaN();
    for (std::size_t i = 0; i < count; ++i) {
        // quiet, signalling and negative NaNs: every one is NaN
        std::uint32_t u = 0x7fc00000U | static_cast<std::uint32_t>(i % 7);
        if (i % 3 == 1) {
            u = 0xffc00001U;
        } else if (i % 3 == 2) {
            u = 0x7f800001U;
        }
        float f = qnan;
        std::memcpy(&f, &u, 4);
        putFloat(bytes, start + 4 * i, f);
    }
    const std::pair<std::int64_t, std::int64_t> range{start, count * 4};
    const std::string allNaN = writeBytes(dir, "allnan", bytes);
    io::FileScan s = io::scanFile(allNaN, range);
    EXPECT_FALSE(s.anyNotNaN);
    EXPECT_EQ(s.checksum, zlibChecksum(bytes));
    EXPECT_EQ(s.checksum, io::fileChecksum(allNaN));
    // One value that is not NaN, in the last block, is found: +inf, then a finite one.
    for (const float v : {std::numeric_limits<float>::infinity(), -0.0F, 3.5F}) {
        putFloat(bytes, start + 4 * (count - 1), v);
        EXPECT_TRUE(io::scanFile(writeBytes(dir, "one", bytes), range).anyNotNaN) << v;
    }
    // Bytes outside the range do not count (random bytes there are mostly not NaN).
    putFloat(bytes, start + 4 * (count - 1), qnan);
    EXPECT_FALSE(io::scanFile(writeBytes(dir, "again", bytes), range).anyNotNaN);
    // A file that ends inside the range is truncated.
    bytes.resize(start + 1000);
    const std::string cut = writeBytes(dir, "cut", bytes);
    try {
        (void)io::scanFile(cut, range);
        ADD_FAILURE() << "no exception for a file that ends inside the range";
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find(cut + ": truncated file"), std::string::npos) << e.what();
    }
}
