// Tests of WarpReader's pread(2) fast path: for the real warps under tests/data and for written
// files with every mask encoding and special float bit patterns, the fast path and cfitsio
// (SAFECLIP_NO_FAST_READ=1) read memcmp-identical planes for full and sub-boxes; planes it cannot
// reproduce exactly fall back to cfitsio; truncated files give one-line errors naming the file.
#include <fitsio.h>
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "ExpectError.h"
#include "Files.h"
#include "TempDir.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"

namespace fs = std::filesystem;
using safeclip::InputError;
using safeclip::io::WarpReader;
using safeclip::kernel::Box;
using safeclip::kernel::MaskDict;
using safeclip::kernel::MaskedImage;
using safeclip::kernel::MaskPixel;
using safeclip::test::sameBits;
using safeclip::test::TempDir;

namespace {

const std::string kData = SAFECLIP_TEST_DATA;

/// Sets SAFECLIP_NO_FAST_READ for its lifetime and restores the previous value afterwards.
class ScopedNoFastRead {
public:
    explicit ScopedNoFastRead(const char* value = "1") {
        if (const char* old = std::getenv(kVar)) {
            m_old = old;
        }
        ::setenv(kVar, value, 1);
    }
    ~ScopedNoFastRead() {
        if (m_old) {
            ::setenv(kVar, m_old->c_str(), 1);
        } else {
            ::unsetenv(kVar);
        }
    }
    ScopedNoFastRead(const ScopedNoFastRead&) = delete;
    ScopedNoFastRead& operator=(const ScopedNoFastRead&) = delete;

private:
    static constexpr const char* kVar = "SAFECLIP_NO_FAST_READ";
    std::optional<std::string> m_old;
};

/// A reader that uses cfitsio for every plane.
WarpReader cfitsioReader(const std::string& path) {
    const ScopedNoFastRead noFast;
    return WarpReader(path);
}

/// Full box, corners, single rows and columns, boxes off column 0, full-width row bands.
std::vector<Box> testBoxes(const Box& b) {
    return {
        b,
        Box{b.x0, b.y0, 1, 1},
        Box{b.x1() - 1, b.y1() - 1, 1, 1},
        Box{b.x0, b.y0, b.width, 1},
        Box{b.x0, b.y1() - 1, b.width, 1},
        Box{b.x0 + b.width / 2, b.y0 + 1, b.width - b.width / 2, 1},
        Box{b.x0, b.y0, 1, b.height},
        Box{b.x1() - 1, b.y0, 1, b.height},
        Box{b.x0 + b.width / 3, b.y0, 1, b.height},
        Box{b.x0 + b.width / 3, b.y0 + b.height / 4, b.width / 2, b.height / 2},
        Box{b.x0 + 1, b.y0, b.width - 1, b.height},
        Box{b.x1() - 7, b.y0 + 2, 7, b.height - 2},
        Box{b.x0, b.y0 + b.height / 2, b.width, b.height - b.height / 2},
        Box{b.x0, b.y0 + 1, b.width, b.height - 2},
    };
}

/// The fast reader uses pread for `direct` planes, and it and a cfitsio reader give the same bits
/// for every test box, all planes together and one at a time, before and after conformTo.
void expectSameAsCfitsio(const std::string& path, int direct) {
    SCOPED_TRACE(path);
    WarpReader fast(path);
    WarpReader slow = cfitsioReader(path);
    EXPECT_EQ(fast.directPlanes(), direct);
    EXPECT_EQ(slow.directPlanes(), 0);
    for (int pass = 0; pass < 2; ++pass) {
        for (const Box& box : testBoxes(fast.header().box)) {
            SCOPED_TRACE(box.str() + (pass == 0 ? " file bits" : " canonical bits"));
            const MaskedImage a = fast.read(box);
            const MaskedImage b = slow.read(box);
            EXPECT_TRUE(sameBits(a.image.data(), b.image.data()));
            EXPECT_TRUE(sameBits(a.mask.data(), b.mask.data()));
            EXPECT_TRUE(sameBits(a.variance.data(), b.variance.data()));
            const auto n = static_cast<std::size_t>(box.area());
            std::vector<float> one(n);
            fast.readPlanes(box, one.data(), nullptr, nullptr);
            EXPECT_TRUE(sameBits(one, b.image.data()));
            fast.readPlanes(box, nullptr, nullptr, one.data());
            EXPECT_TRUE(sameBits(one, b.variance.data()));
            std::vector<MaskPixel> mask(n);
            fast.readPlanes(box, nullptr, mask.data(), nullptr);
            EXPECT_TRUE(sameBits(mask, b.mask.data()));
        }
        MaskDict canonical = MaskDict::canonical();
        fast.conformTo(canonical);
        MaskDict canonical2 = MaskDict::canonical();
        slow.conformTo(canonical2);
    }
}

/// Float bit patterns cfitsio passes through untouched: NaNs with several payloads (quiet,
/// signalling, negative), infinities, signed zeros, denormals and the extremes.
const std::vector<std::uint32_t> kSpecialBits = {
    0x7fc00000U, 0xffc00000U, 0x7f800001U, 0x7fa5a5a5U, 0xffffffffU, 0x7fbfffffU, 0x7f800000U,
    0xff800000U, 0x80000000U, 0x00000000U, 0x00000001U, 0x807fffffU, 0x00800000U, 0x7f7fffffU,
};

/// A plane of normal floats with the special patterns spread over it (first and last pixels too).
std::vector<float> floatPlane(const Box& box, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> g(100.0F, 30.0F);
    std::vector<float> v(static_cast<std::size_t>(box.area()));
    for (float& x : v) {
        x = g(rng);
    }
    for (std::size_t i = 0, k = seed; i < v.size(); i += 1 + rng() % 13, ++k) {
        v[i] = std::bit_cast<float>(kSpecialBits[k % kSpecialBits.size()]);
    }
    v.back() = std::bit_cast<float>(kSpecialBits[seed % kSpecialBits.size()]);
    return v;
}

/// How to write a test warp with cfitsio.
struct Spec {
    Box box{-13, 40, 157, 61};
    int maskBitpix = LONG_IMG;  ///< LONG_IMG, SHORT_IMG, BYTE_IMG, USHORT_IMG or ULONG_IMG (BZERO)
    int compression = 0;        ///< 0 or GZIP_1 (lossless)
    std::function<void(fitsfile*)> imageExtra;  ///< extra IMAGE cards before the pixels
    std::function<void(fitsfile*)> maskExtra;   ///< extra MASK cards before the pixels
};

void check(int status, const std::string& what) {
    if (status != 0) {
        char text[FLEN_STATUS] = {};
        fits_get_errstatus(status, text);
        fits_clear_errmsg();
        FAIL() << what << ": " << text;
    }
}

/// The MP_ planes of the written masks: bit 15 needs the 16-bit BZERO, bit 31 the 32-bit one.
std::vector<std::pair<std::string, int>> maskPlanes(int bitpix) {
    std::vector<std::pair<std::string, int>> planes = {
        {"BAD", 0}, {"SAT", 1}, {"EDGE", 4}, {"DETECTED", 5}, {"NO_DATA", 7}};
    if (bitpix != BYTE_IMG && bitpix != SHORT_IMG) {
        planes.emplace_back("HIGH15", 15);
    }
    if (bitpix == LONG_IMG || bitpix == ULONG_IMG) {
        planes.emplace_back("HIGH30", 30);
    }
    if (bitpix == ULONG_IMG) {
        planes.emplace_back("TOP", 31);
    }
    return planes;
}

void writePlane(fitsfile* f, const Spec& spec, const char* name, int bitpix, int datatype, void* data,
                const std::function<void(fitsfile*)>& extra, int* status) {
    if (spec.compression != 0) {
        fits_set_compression_type(f, spec.compression, status);
        fits_set_quantize_level(f, 0.0F, status);  // lossless floats
    }
    long naxes[2] = {spec.box.width, spec.box.height};
    fits_create_img(f, bitpix, 2, naxes, status);
    fits_write_key_str(f, "EXTNAME", name, "", status);
    long x0 = spec.box.x0;
    long y0 = spec.box.y0;
    long one = 1;
    fits_write_key(f, TLONG, "CRVAL1A", &x0, "", status);
    fits_write_key(f, TLONG, "CRVAL2A", &y0, "", status);
    fits_write_key(f, TLONG, "CRPIX1A", &one, "", status);
    fits_write_key(f, TLONG, "CRPIX2A", &one, "", status);
    if (std::string(name) == "MASK") {
        for (const auto& [plane, bit] : maskPlanes(bitpix)) {
            long b = bit;
            fits_write_key(f, TLONG, ("MP_" + plane).c_str(), &b, "", status);
        }
    }
    if (extra) {
        extra(f);
    }
    fits_write_img(f, datatype, 1, spec.box.area(), data, status);
    fits_set_compression_type(f, 0, status);
}

/// The pixels of a written warp, as stored (the mask as its unsigned value).
struct Written {
    std::vector<float> image;
    std::vector<MaskPixel> mask;
    std::vector<float> variance;
};

Written writeWarp(const std::string& path, const Spec& spec, unsigned seed) {
    Written w;
    w.image = floatPlane(spec.box, seed);
    w.variance = floatPlane(spec.box, seed + 1);
    MaskPixel allBits = 0;
    for (const auto& [plane, bit] : maskPlanes(spec.maskBitpix)) {
        allBits |= static_cast<MaskPixel>(1U << static_cast<unsigned>(bit));
    }
    std::mt19937 rng(seed + 2);
    w.mask.resize(w.image.size());
    for (MaskPixel& m : w.mask) {
        m = static_cast<MaskPixel>(rng()) & allBits;
    }
    fitsfile* f = nullptr;
    int status = 0;
    fits_create_diskfile(&f, path.c_str(), &status);
    fits_create_img(f, BYTE_IMG, 0, nullptr, &status);
    writePlane(f, spec, "IMAGE", FLOAT_IMG, TFLOAT, w.image.data(), spec.imageExtra, &status);
    std::vector<MaskPixel> mask = w.mask;
    writePlane(f, spec, "MASK", spec.maskBitpix, spec.maskBitpix == ULONG_IMG ? TUINT : TINT, mask.data(),
               spec.maskExtra, &status);
    writePlane(f, spec, "VARIANCE", FLOAT_IMG, TFLOAT, w.variance.data(), nullptr, &status);
    fits_close_file(f, &status);
    check(status, "write " + path);
    return w;
}

/// Byte offsets (data start, data end) of HDU `hdu` (1-based).
std::pair<long long, long long> dataRange(const std::string& path, int hdu) {
    fitsfile* f = nullptr;
    int status = 0;
    LONGLONG head = 0;
    LONGLONG start = 0;
    LONGLONG end = 0;
    fits_open_diskfile(&f, path.c_str(), READONLY, &status);
    fits_movabs_hdu(f, hdu, nullptr, &status);
    fits_get_hduaddrll(f, &head, &start, &end, &status);
    fits_close_file(f, &status);
    check(status, "layout of " + path);
    return {start, end};
}

/// fn must throw an InputError whose one-line message names `path` and contains `word`.
const auto expectInputError = safeclip::test::expectErrorNaming<InputError>;

int openDescriptors() {
    int n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd")) {
        ++n;
    }
    return n;
}

}  // namespace

// ---- the real warps ------------------------------------------------------------------------------

TEST(WarpReaderFastRead, RealHscWarpWithSixteenBitMask) {
    expectSameAsCfitsio(kData + "/hsc-lsst-format/HSC-0908120-056-small.fits", 3);
}

TEST(WarpReaderFastRead, IngestedDecamWarps) {
    // The DECam files are single-HDU exposures: ingest (the safeclip binary) turns them into warps.
    TempDir dir;
    std::string cmd = std::string(SAFECLIP_BINARY) + " --log-level off ingest --out " + dir.path().string() +
                      " --zero-point 30 --fwhm 4";
    for (const char c : {'a', 'b', 'c', 'd', 'e'}) {
        cmd += " " + kData + "/decam-obs04/DEC-OBS04" + c + ".mini.fits";
    }
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    int warps = 0;
    for (const auto& e : fs::directory_iterator(dir.path())) {
        if (e.path().extension() == ".fits") {
            expectSameAsCfitsio(e.path().string(), 3);
            ++warps;
        }
    }
    EXPECT_EQ(warps, 5);
}

// ---- written files: every mask encoding, special floats ------------------------------------------

TEST(WarpReaderFastRead, ThirtyTwoBitMaskAndSpecialFloats) {
    TempDir dir;
    const std::string path = dir.file("m32.fits");
    const Written w = writeWarp(path, Spec{}, 1);
    expectSameAsCfitsio(path, 3);
    // Both equal the bits written: NaN payloads, infinities, -0.0 and denormals survive.
    const MaskedImage got = WarpReader(path).readAll();
    EXPECT_TRUE(sameBits(got.image.data(), w.image));
    EXPECT_TRUE(sameBits(got.variance.data(), w.variance));
    EXPECT_TRUE(sameBits(got.mask.data(), w.mask));
}

TEST(WarpReaderFastRead, SixteenBitMaskWithBzero) {
    TempDir dir;
    const std::string path = dir.file("m16.fits");
    Spec spec;
    spec.maskBitpix = USHORT_IMG;
    const Written w = writeWarp(path, spec, 2);
    expectSameAsCfitsio(path, 3);
    EXPECT_TRUE(sameBits(WarpReader(path).readAll().mask.data(), w.mask));
}

TEST(WarpReaderFastRead, UnsignedThirtyTwoBitMaskWithBzero) {
    TempDir dir;
    const std::string path = dir.file("m32u.fits");
    Spec spec;
    spec.maskBitpix = ULONG_IMG;
    const Written w = writeWarp(path, spec, 3);
    expectSameAsCfitsio(path, 3);
    EXPECT_TRUE(sameBits(WarpReader(path).readAll().mask.data(), w.mask));
}

TEST(WarpReaderFastRead, ExposureWriterWarp) {
    TempDir dir;
    const std::string path = dir.file("warp.fits");
    const Box box{-37, 1200, 61, 47};
    MaskedImage mi(box);
    mi.image.data() = floatPlane(box, 4);
    mi.variance.data() = floatPlane(box, 5);
    for (std::size_t i = 0; i < mi.mask.data().size(); ++i) {
        mi.mask.data()[i] = static_cast<MaskPixel>(i * 2654435761U) & 0xFF;
    }
    const MaskDict planes = MaskDict::defaults();
    safeclip::io::ExposureData data;
    data.image = &mi;
    data.maskPlanes = &planes;
    safeclip::io::writeExposure(path, data);
    expectSameAsCfitsio(path, 3);
}

TEST(WarpReaderFastRead, RowsWiderThanOneReadBlock) {
    // 40000-pixel rows: full-width and single-row reads both take several pread blocks.
    TempDir dir;
    Spec spec;
    spec.box = Box{7, -2, 40000, 3};
    for (const int bitpix : {LONG_IMG, USHORT_IMG}) {
        spec.maskBitpix = bitpix;
        const std::string path = dir.file("wide" + std::to_string(bitpix) + ".fits");
        const Written w = writeWarp(path, spec, 6);
        expectSameAsCfitsio(path, 3);
        const MaskedImage got = WarpReader(path).readAll();
        EXPECT_TRUE(sameBits(got.image.data(), w.image));
        EXPECT_TRUE(sameBits(got.mask.data(), w.mask));
    }
}

// ---- planes the fast path leaves to cfitsio ------------------------------------------------------

TEST(WarpReaderFastRead, TileCompressedPlanesUseCfitsio) {
    TempDir dir;
    const std::string path = dir.file("gzip.fits");
    Spec spec;
    spec.compression = GZIP_1;
    writeWarp(path, spec, 7);
    expectSameAsCfitsio(path, 0);
}

TEST(WarpReaderFastRead, ScaledImageUsesCfitsio) {
    TempDir dir;
    const std::string path = dir.file("scaled.fits");
    Spec spec;
    spec.imageExtra = [](fitsfile* f) {
        int status = 0;
        double scale = 2.0;
        double zero = 0.5;
        fits_write_key(f, TDOUBLE, "BSCALE", &scale, "", &status);
        fits_write_key(f, TDOUBLE, "BZERO", &zero, "", &status);
        check(status, "write BSCALE");
    };
    writeWarp(path, spec, 8);
    expectSameAsCfitsio(path, 2);
}

TEST(WarpReaderFastRead, MaskWithBlankUsesCfitsio) {
    TempDir dir;
    const std::string path = dir.file("blank.fits");
    Spec spec;
    spec.maskExtra = [](fitsfile* f) {
        int status = 0;
        long blank = -1;
        fits_write_key(f, TLONG, "BLANK", &blank, "", &status);
        check(status, "write BLANK");
    };
    writeWarp(path, spec, 9);
    expectSameAsCfitsio(path, 2);
}

TEST(WarpReaderFastRead, OtherMaskTypesUseCfitsio) {
    TempDir dir;
    for (const int bitpix : {BYTE_IMG, SHORT_IMG}) {
        Spec spec;
        spec.maskBitpix = bitpix;
        const std::string path = dir.file("mask" + std::to_string(bitpix) + ".fits");
        writeWarp(path, spec, 10);
        expectSameAsCfitsio(path, 2);
    }
}

// ---- switches, ownership, errors -----------------------------------------------------------------

TEST(WarpReaderFastRead, EnvironmentSwitch) {
    TempDir dir;
    const std::string path = dir.file("env.fits");
    writeWarp(path, Spec{}, 11);
    {
        const ScopedNoFastRead off("1");
        EXPECT_EQ(WarpReader(path).directPlanes(), 0);
    }
    {
        const ScopedNoFastRead on("0");
        EXPECT_EQ(WarpReader(path).directPlanes(), 3);
    }
    EXPECT_EQ(WarpReader(path).directPlanes(), 3);
}

TEST(WarpReaderFastRead, MovesKeepOneDescriptorAndCloseIt) {
    TempDir dir;
    const std::string path = dir.file("move.fits");
    const Written w = writeWarp(path, Spec{}, 12);
    const int before = openDescriptors();
    {
        WarpReader a(path);
        WarpReader b(std::move(a));
        WarpReader c(path);
        c = std::move(b);
        EXPECT_EQ(c.directPlanes(), 3);
        EXPECT_TRUE(sameBits(c.readAll().image.data(), w.image));
        std::vector<WarpReader> many;
        for (int i = 0; i < 20; ++i) {
            many.emplace_back(path);  // reallocation moves them
        }
        EXPECT_TRUE(sameBits(many.front().readAll().variance.data(), w.variance));
    }
    EXPECT_EQ(openDescriptors(), before);
}

TEST(WarpReaderFastRead, TruncatedInVarianceDataIsRefusedAtOpen) {
    TempDir dir;
    const std::string path = dir.file("cut.fits");
    writeWarp(path, Spec{}, 13);
    const auto [start, end] = dataRange(path, 4);
    fs::resize_file(path, static_cast<std::uintmax_t>(start + (end - start) / 2));
    expectInputError([&] { WarpReader r(path); }, path, "truncated file");
    expectInputError([&] { cfitsioReader(path); }, path, "truncated file");
}

TEST(WarpReaderFastRead, TruncatedAfterOpenIsAnErrorNamingTheFile) {
    TempDir dir;
    const std::string path = dir.file("shrunk.fits");
    const Written w = writeWarp(path, Spec{}, 14);
    const WarpReader fast(path);
    ASSERT_EQ(fast.directPlanes(), 3);
    const auto [start, end] = dataRange(path, 4);
    fs::resize_file(path, static_cast<std::uintmax_t>(start + (end - start) / 2));
    const Box box = fast.header().box;
    std::vector<float> plane(static_cast<std::size_t>(box.area()));
    fast.readPlanes(box, plane.data(), nullptr, nullptr);  // IMAGE is still whole
    EXPECT_TRUE(sameBits(plane, w.image));
    expectInputError([&] { fast.readPlanes(box, nullptr, nullptr, plane.data()); }, path, "truncated file");
    expectInputError([&] { (void)fast.read(Box{box.x0 + 3, box.y1() - 2, 5, 2}); }, path, "read VARIANCE");
}
