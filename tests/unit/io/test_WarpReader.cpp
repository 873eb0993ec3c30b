// Tests of WarpReader (and FitsFile): the real HSC afw file, sub-box reads, tile compression,
// mask remapping, calibration sources and every kind of bad input.
#include <fitsio.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ExpectError.h"
#include "Files.h"
#include "TempDir.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/FitsFile.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"

namespace fs = std::filesystem;
using safeclip::InputError;
using safeclip::InvalidParameter;
using safeclip::io::WarpReader;
using safeclip::kernel::Box;
using safeclip::kernel::MaskDict;
using safeclip::kernel::MaskedImage;
using safeclip::kernel::MaskPixel;

namespace {

const std::string kHsc = std::string(SAFECLIP_TEST_DATA) + "/hsc-lsst-format/HSC-0908120-056-small.fits";

using safeclip::test::sameBits;
using safeclip::test::TempDir;

/// Runs fn, which must throw InputError whose one-line message names `path` and contains `word`,
/// and must not print anything to stderr.
void expectInputError(const std::function<void()>& fn, const std::string& path, const std::string& word) {
    testing::internal::CaptureStderr();
    safeclip::test::expectErrorNaming<InputError>(fn, path, word);
    EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

void check(int status, const char* what) {
    if (status != 0) {
        char text[FLEN_STATUS];
        fits_get_errstatus(status, text);
        fits_clear_errmsg();
        FAIL() << what << ": " << text;
    }
}

/// Pixel data for test warps.
MaskedImage makeImage(const Box& box, const MaskDict& planes, unsigned seed, bool withSpecials = true) {
    MaskedImage mi(box);
    std::mt19937 rng(seed);
    std::normal_distribution<float> g(10.0F, 3.0F);
    MaskPixel allBits = 0;
    for (const auto& [name, bit] : planes.planes()) {
        allBits |= static_cast<MaskPixel>(1U << static_cast<unsigned>(bit));
    }
    for (std::size_t i = 0; i < mi.image.data().size(); ++i) {
        mi.image.data()[i] = g(rng);
        mi.variance.data()[i] = std::abs(g(rng));
        mi.mask.data()[i] = static_cast<MaskPixel>(rng()) & allBits;
    }
    if (withSpecials && !mi.image.data().empty()) {
        mi.image.data()[0] = std::numeric_limits<float>::quiet_NaN();
        mi.variance.data()[0] = std::numeric_limits<float>::infinity();
        mi.image.data().back() = -std::numeric_limits<float>::infinity();
    }
    return mi;
}

/// A warp of makeImage(box, default planes, seed) written to `path` with writeExposure.
void writeWarpFile(const std::string& path, const Box& box, unsigned seed) {
    MaskDict planes = MaskDict::defaults();
    const MaskedImage mi = makeImage(box, planes, seed);
    safeclip::io::ExposureData data;
    data.image = &mi;
    data.maskPlanes = &planes;
    safeclip::io::writeExposure(path, data);
}

/// How to build a raw test warp with cfitsio directly (also for the broken ones).
struct RawWarp {
    Box box{5, -3, 23, 17};
    bool image = true;
    bool mask = true;
    bool variance = true;
    Box maskBox{5, -3, 23, 17};  ///< a different size makes a broken file
    std::vector<std::pair<std::string, int>> mp = MaskDict::defaults().planes();
    int maskBitpix = LONG_IMG;  ///< LONG_IMG, USHORT_IMG (BZERO 32768) or ULONG_IMG
    int compression = 0;        ///< 0, GZIP_1 (lossless for floats here) or RICE_1 (quantised floats)
    long tile[2] = {0, 0};      ///< tile size (0 = cfitsio default: row by row)
    bool xy0Cards = true;       ///< CRVAL1A/2A
    bool ltvCards = true;       ///< LTV1/2
    bool extname = true;        ///< EXTNAME (else only EXTTYPE)
    std::function<void(fitsfile*)> primaryExtra;
    std::function<void(fitsfile*)> imageExtra;
};

void writeRawPlane(fitsfile* f, const RawWarp& spec, const std::string& name, const Box& box, int bitpix,
                   int datatype, const void* data, int* status) {
    if (spec.compression != 0) {
        fits_set_compression_type(f, spec.compression, status);
        if (spec.tile[0] > 0) {
            long tile[2] = {spec.tile[0], spec.tile[1]};
            fits_set_tile_dim(f, 2, tile, status);
        }
        if (spec.compression == GZIP_1) {
            fits_set_quantize_level(f, 0.0F, status);  // lossless floats
        }
    }
    long naxes[2] = {box.width, box.height};
    fits_create_img(f, bitpix, 2, naxes, status);
    if (spec.extname) {
        fits_write_key_str(f, "EXTNAME", name.c_str(), "", status);
    }
    fits_write_key_str(f, "EXTTYPE", name.c_str(), "", status);
    long x0 = box.x0;
    long y0 = box.y0;
    long mx0 = -x0;
    long my0 = -y0;
    if (spec.ltvCards) {
        fits_write_key(f, TLONG, "LTV1", &mx0, "", status);
        fits_write_key(f, TLONG, "LTV2", &my0, "", status);
    }
    if (spec.xy0Cards) {
        long one = 1;
        fits_write_key(f, TLONG, "CRVAL1A", &x0, "", status);
        fits_write_key(f, TLONG, "CRVAL2A", &y0, "", status);
        fits_write_key(f, TLONG, "CRPIX1A", &one, "", status);
        fits_write_key(f, TLONG, "CRPIX2A", &one, "", status);
        fits_write_key_str(f, "CTYPE1A", "LINEAR", "", status);
        fits_write_key_str(f, "CTYPE2A", "LINEAR", "", status);
    }
    if (name == "MASK") {
        for (const auto& [plane, bit] : spec.mp) {
            long b = bit;
            fits_write_key(f, TLONG, ("MP_" + plane).c_str(), &b, "", status);
        }
    }
    if (name == "IMAGE" && spec.imageExtra) {
        spec.imageExtra(f);
    }
    fits_write_img(f, datatype, 1, box.area(), const_cast<void*>(data), status);
    fits_set_compression_type(f, 0, status);
}

/// Writes the raw warp and returns the pixels written (the mask limited to the MP_ bits).
MaskedImage writeRawWarp(const std::string& path, const RawWarp& spec, unsigned seed = 1) {
    MaskDict planes;
    for (const auto& [name, bit] : spec.mp) {
        try {
            planes.setPlane(name, bit);
        } catch (const InvalidParameter&) {  // duplicates are wanted in some broken files
        }
    }
    MaskedImage mi = makeImage(spec.box, planes, seed);
    if (spec.maskBitpix == USHORT_IMG) {
        for (auto& m : mi.mask.data()) {
            m &= 0xFFFF;
        }
    }
    MaskedImage maskOnly(spec.maskBox);
    for (std::size_t i = 0; i < maskOnly.mask.data().size(); ++i) {
        maskOnly.mask.data()[i] = mi.mask.data()[i % mi.mask.data().size()];
    }
    fitsfile* f = nullptr;
    int status = 0;
    fits_create_diskfile(&f, path.c_str(), &status);
    fits_create_img(f, BYTE_IMG, 0, nullptr, &status);
    if (spec.primaryExtra) {
        spec.primaryExtra(f);
    }
    if (spec.image) {
        writeRawPlane(f, spec, "IMAGE", spec.box, FLOAT_IMG, TFLOAT, mi.image.data().data(), &status);
    }
    if (spec.mask) {
        writeRawPlane(f, spec, "MASK", spec.maskBox, spec.maskBitpix,
                      spec.maskBitpix == ULONG_IMG ? TUINT : TINT, maskOnly.mask.data().data(), &status);
    }
    if (spec.variance) {
        writeRawPlane(f, spec, "VARIANCE", spec.box, FLOAT_IMG, TFLOAT, mi.variance.data().data(), &status);
    }
    fits_close_file(f, &status);
    check(status, ("write " + path).c_str());
    return mi;
}

/// The pixels of `box` cut out of a whole-warp image.
MaskedImage cut(const MaskedImage& whole, const Box& box) {
    MaskedImage out(box);
    for (int y = box.y0; y < box.y1(); ++y) {
        for (int x = box.x0; x < box.x1(); ++x) {
            out.image(x, y) = whole.image(x, y);
            out.mask(x, y) = whole.mask(x, y);
            out.variance(x, y) = whole.variance(x, y);
        }
    }
    return out;
}

/// Sub-box reads (edges, corners, single pixels, interior) equal the same pixels of a whole read.
void expectSubBoxesMatch(const WarpReader& reader) {
    const Box b = reader.header().box;
    const MaskedImage whole = reader.readAll();
    const std::vector<Box> boxes = {
        b,
        Box{b.x0, b.y0, 1, 1},
        Box{b.x1() - 1, b.y1() - 1, 1, 1},
        Box{b.x0, b.y0, b.width, 1},
        Box{b.x0, b.y1() - 1, b.width, 1},
        Box{b.x0, b.y0, 1, b.height},
        Box{b.x1() - 1, b.y0, 1, b.height},
        Box{b.x0 + b.width / 3, b.y0 + b.height / 4, b.width / 2, b.height / 2},
        Box{b.x1() - 7, b.y0 + 2, 7, b.height - 2},
        Box{b.x0, b.y0 + b.height / 2, b.width, b.height - b.height / 2},
    };
    for (const Box& box : boxes) {
        SCOPED_TRACE(box.str());
        const MaskedImage expected = cut(whole, box);
        const MaskedImage got = reader.read(box);
        EXPECT_EQ(got.box(), box);
        EXPECT_TRUE(sameBits(got.image.data(), expected.image.data()));
        EXPECT_TRUE(sameBits(got.mask.data(), expected.mask.data()));
        EXPECT_TRUE(sameBits(got.variance.data(), expected.variance.data()));
        // readPlanes with a subset of planes
        std::vector<MaskPixel> maskOnly(static_cast<std::size_t>(box.area()));
        reader.readPlanes(box, nullptr, maskOnly.data(), nullptr);
        EXPECT_TRUE(sameBits(maskOnly, expected.mask.data()));
    }
}

int countBit(const std::vector<MaskPixel>& mask, int bit) {
    int n = 0;
    for (MaskPixel m : mask) {
        n += (m >> bit) & 1;
    }
    return n;
}

}  // namespace

// ---- the real HSC file ---------------------------------------------------------------------------

TEST(WarpReaderHsc, Header) {
    const WarpReader reader(kHsc);
    const auto& h = reader.header();
    EXPECT_EQ(h.path, kHsc);
    EXPECT_EQ(h.box, (Box{100, 100, 200, 200}));  // CRVAL1A/2A = 100, LTV1/2 = -100
    // MP_* cards of the MASK HDU (HIERARCH for the long names); NO_DATA at bit 9 in this file.
    EXPECT_EQ(h.maskPlanes.size(), 11U);
    EXPECT_EQ(h.maskPlanes.bitOf("BAD"), 0);
    EXPECT_EQ(h.maskPlanes.bitOf("SAT"), 1);
    EXPECT_EQ(h.maskPlanes.bitOf("DETECTED"), 5);
    EXPECT_EQ(h.maskPlanes.bitOf("DETECTED_NEGATIVE"), 6);
    EXPECT_EQ(h.maskPlanes.bitOf("CROSSTALK"), 8);
    EXPECT_EQ(h.maskPlanes.bitOf("NO_DATA"), 9);
    EXPECT_EQ(h.maskPlanes.bitOf("UNMASKEDNAN"), 10);
    // HDU 0 has FLUXMAG0 = 0 (an uncalibrated calexp) and no PhotoCalib: no calibration.
    EXPECT_FALSE(h.calibrationMean.has_value());
    EXPECT_EQ(h.calibrationSource, "");
    EXPECT_FALSE(h.psfSigma.has_value());
    EXPECT_FALSE(h.visit.has_value());
    EXPECT_EQ(h.filter, "_unknown_");
    // TAN-SIP WCS of the IMAGE HDU: 62 cards, without the "A" (xy0) WCS and without LTV.
    EXPECT_EQ(h.wcsCards.size(), 62U);
    auto has = [&h](const std::string& prefix) {
        for (const auto& c : h.wcsCards) {
            if (c.compare(0, prefix.size(), prefix) == 0) {
                return true;
            }
        }
        return false;
    };
    EXPECT_TRUE(has("CTYPE1  = 'RA---TAN-SIP'"));
    EXPECT_TRUE(has("CRVAL1  =     151.319266199627"));
    EXPECT_TRUE(has("CD2_1   ="));
    EXPECT_TRUE(has("A_ORDER ="));
    EXPECT_TRUE(has("BP_4_0  ="));
    EXPECT_TRUE(has("RADESYS ="));
    EXPECT_TRUE(has("EQUINOX ="));
    EXPECT_FALSE(has("CRVAL1A"));
    EXPECT_FALSE(has("CTYPE1A"));
    EXPECT_FALSE(has("LTV1"));
    EXPECT_FALSE(has("EXTTYPE"));
}

TEST(WarpReaderHsc, PixelsMatchAstropy) {
    const WarpReader reader(kHsc);
    const MaskedImage mi = reader.readAll();
    ASSERT_EQ(mi.box(), (Box{100, 100, 200, 200}));
    // Values printed by astropy for (x, y) PARENT = (col + 100, row + 100).
    EXPECT_EQ(mi.image(100, 100), -49.262725830078125F);
    EXPECT_EQ(mi.variance(100, 100), 418.89593505859375F);
    EXPECT_EQ(mi.image(299, 299), -4.023952484130859F);
    EXPECT_EQ(mi.variance(299, 299), 426.1012878417969F);
    EXPECT_EQ(mi.image(160, 150), 32.07901382446289F);
    EXPECT_EQ(mi.variance(160, 150), 434.15057373046875F);
    EXPECT_EQ(mi.image(299, 100), 19.95610809326172F);
    EXPECT_EQ(mi.image(100, 299), -4.76203727722168F);
    double sumImage = 0.0;
    double sumVariance = 0.0;
    for (std::size_t i = 0; i < mi.image.data().size(); ++i) {
        sumImage += mi.image.data()[i];
        sumVariance += mi.variance.data()[i];
    }
    EXPECT_NEAR(sumImage, 346002.4407659024, 1e-6);
    EXPECT_NEAR(sumVariance, 17213235.26611328, 1e-4);
    // 16-bit mask with BZERO 32768: raw file bits (no conformTo yet).
    EXPECT_EQ(countBit(mi.mask.data(), 5), 5390);  // DETECTED
    EXPECT_EQ(countBit(mi.mask.data(), 8), 14);    // CROSSTALK
    EXPECT_EQ(countBit(mi.mask.data(), 9), 0);     // NO_DATA: no pixel in this file
    EXPECT_EQ(mi.mask(204, 178), 256);
    EXPECT_EQ(mi.mask(214, 100), 32);
}

TEST(WarpReaderHsc, ConformToCanonicalRemapsBits) {
    WarpReader reader(kHsc);
    MaskDict canonical = MaskDict::canonical();
    reader.conformTo(canonical);
    EXPECT_EQ(canonical.bitOf("NO_DATA"), 8);
    EXPECT_EQ(canonical.bitOf("CLIPPED"), 9);
    // Planes the canonical dictionary lacks are appended in order of bit.
    EXPECT_EQ(canonical.bitOf("CROSSTALK"), 13);
    EXPECT_EQ(canonical.bitOf("UNMASKEDNAN"), 14);
    const MaskedImage mi = reader.readAll();
    // File CROSSTALK (bit 8) must not become canonical NO_DATA (bit 8).
    EXPECT_EQ(mi.mask(204, 178), 1 << 13);
    EXPECT_EQ(mi.mask(214, 100), 1 << 5);
    EXPECT_EQ(countBit(mi.mask.data(), 13), 14);
    EXPECT_EQ(countBit(mi.mask.data(), 8), 0);
    EXPECT_EQ(countBit(mi.mask.data(), 5), 5390);
}

TEST(WarpReaderHsc, NoDataPixelBecomesCanonicalNoData) {
    // The file has no NO_DATA pixel: set file bit 9 (NO_DATA) on one pixel of a copy.
    TempDir dir;
    const std::string path = dir.file("hsc-nodata.fits");
    fs::copy_file(kHsc, path);
    {
        fitsfile* f = nullptr;
        int status = 0;
        fits_open_diskfile(&f, path.c_str(), READWRITE, &status);
        fits_movabs_hdu(f, 3, nullptr, &status);
        int value = (1 << 9) | (1 << 5);
        // PARENT (130, 140) is FITS pixel (31, 41): 0-based element 40 * 200 + 30.
        fits_write_img(f, TINT, 40 * 200 + 30 + 1, 1, &value, &status);
        fits_close_file(f, &status);
        check(status, "modify mask");
    }
    WarpReader reader(path);
    EXPECT_EQ(reader.read(Box{130, 140, 1, 1}).mask(130, 140), (1 << 9) | (1 << 5));  // file bits
    MaskDict canonical = MaskDict::canonical();
    reader.conformTo(canonical);
    const MaskedImage mi = reader.readAll();
    EXPECT_EQ(mi.mask(130, 140), canonical.bitMask("NO_DATA") | canonical.bitMask("DETECTED"));
    EXPECT_EQ(mi.mask(130, 140), (1 << 8) | (1 << 5));
    EXPECT_EQ(countBit(mi.mask.data(), 8), 1);
    EXPECT_EQ(countBit(mi.mask.data(), 9), 0);
}

TEST(WarpReaderHsc, SubBoxReadsMatchWholeRead) {
    WarpReader reader(kHsc);
    expectSubBoxesMatch(reader);
    MaskDict canonical = MaskDict::canonical();
    reader.conformTo(canonical);
    expectSubBoxesMatch(reader);
}

TEST(WarpReaderHsc, BoxOutsideWarpIsInvalid) {
    const WarpReader reader(kHsc);
    MaskedImage out;
    EXPECT_THROW(reader.read(Box{99, 100, 10, 10}, out), InvalidParameter);
    EXPECT_THROW(reader.read(Box{100, 99, 10, 10}, out), InvalidParameter);
    EXPECT_THROW(reader.read(Box{291, 100, 10, 10}, out), InvalidParameter);
    EXPECT_THROW(reader.read(Box{100, 291, 10, 10}, out), InvalidParameter);
    EXPECT_THROW((void)reader.read(Box{0, 0, 500, 500}), InvalidParameter);
    std::vector<float> buf(100);
    EXPECT_THROW(reader.readPlanes(Box{295, 295, 10, 10}, buf.data(), nullptr, nullptr), InvalidParameter);
}

TEST(WarpReaderHsc, MoveKeepsReaderUsable) {
    WarpReader a(kHsc);
    WarpReader b(std::move(a));
    EXPECT_EQ(b.read(Box{160, 150, 1, 1}).image(160, 150), 32.07901382446289F);
    WarpReader c(kHsc);
    c = std::move(b);
    EXPECT_EQ(c.read(Box{160, 150, 1, 1}).variance(160, 150), 434.15057373046875F);
}

// ---- files written by safeclip and by cfitsio directly -----------------------------------------

TEST(WarpReader, SubBoxReadsOnWrittenFile) {
    TempDir dir;
    const std::string path = dir.file("warp.fits");
    MaskDict planes = MaskDict::defaults();
    planes.addPlane("CROSSTALK");
    const Box box{-37, 1200, 61, 47};
    const MaskedImage mi = makeImage(box, planes, 7);
    safeclip::io::ExposureData data;
    data.image = &mi;
    data.maskPlanes = &planes;
    safeclip::io::writeExposure(path, data);
    const WarpReader reader(path);
    EXPECT_EQ(reader.header().box, box);
    const MaskedImage whole = reader.readAll();
    EXPECT_TRUE(sameBits(whole.image.data(), mi.image.data()));
    EXPECT_TRUE(sameBits(whole.mask.data(), mi.mask.data()));
    EXPECT_TRUE(sameBits(whole.variance.data(), mi.variance.data()));
    expectSubBoxesMatch(reader);
    // Row chunks, as the stacker reads them, reuse the output buffer.
    MaskedImage chunk;
    for (int y = box.y0; y < box.y1(); y += 10) {
        const Box rows = box.rows(y, y + 10);
        reader.read(rows, chunk);
        ASSERT_EQ(chunk.box(), rows);
        EXPECT_TRUE(sameBits(chunk.image.data(), cut(mi, rows).image.data()));
    }
}

TEST(WarpReader, TileCompressedLosslessReadsIdentically) {
    TempDir dir;
    RawWarp spec;
    spec.box = Box{-4, 7, 45, 33};
    spec.maskBox = spec.box;
    const MaskedImage plain = writeRawWarp(dir.file("plain.fits"), spec, 3);
    spec.compression = GZIP_1;
    spec.tile[0] = 8;
    spec.tile[1] = 5;
    const MaskedImage written = writeRawWarp(dir.file("gzip.fits"), spec, 3);
    ASSERT_TRUE(sameBits(plain.image.data(), written.image.data()));
    {
        // Really compressed: the IMAGE HDU is a BINTABLE with ZIMAGE = T.
        fitsfile* f = nullptr;
        int status = 0;
        fits_open_diskfile(&f, dir.file("gzip.fits").c_str(), READONLY, &status);
        fits_movabs_hdu(f, 2, nullptr, &status);
        EXPECT_TRUE(fits_is_compressed_image(f, &status));
        fits_close_file(f, &status);
        check(status, "inspect compressed file");
    }
    const WarpReader a(dir.file("plain.fits"));
    const WarpReader b(dir.file("gzip.fits"));
    EXPECT_EQ(a.header().box, b.header().box);
    const MaskedImage ma = a.readAll();
    const MaskedImage mb = b.readAll();
    EXPECT_TRUE(sameBits(ma.image.data(), written.image.data()));
    EXPECT_TRUE(sameBits(mb.image.data(), ma.image.data()));
    EXPECT_TRUE(sameBits(mb.mask.data(), ma.mask.data()));
    EXPECT_TRUE(sameBits(mb.variance.data(), ma.variance.data()));
    EXPECT_TRUE(std::isnan(mb.image.data()[0]));
    EXPECT_TRUE(std::isinf(mb.variance.data()[0]));
    expectSubBoxesMatch(b);
}

TEST(WarpReader, TileCompressedRiceSubBoxes) {
    TempDir dir;
    RawWarp spec;
    spec.box = Box{0, 0, 64, 40};
    spec.maskBox = spec.box;
    spec.compression = RICE_1;  // quantised floats: compare with the file's own whole read
    spec.tile[0] = 16;
    spec.tile[1] = 16;
    const MaskedImage written = writeRawWarp(dir.file("rice.fits"), spec, 5);
    const WarpReader reader(dir.file("rice.fits"));
    const MaskedImage whole = reader.readAll();
    EXPECT_TRUE(sameBits(whole.mask.data(), written.mask.data()));  // integers are lossless
    // Quantised floats (NaN handling of quantised tiles is cfitsio's business, not tested here).
    for (std::size_t i = 1; i + 1 < whole.image.data().size(); ++i) {
        ASSERT_NEAR(whole.image.data()[i], written.image.data()[i], 0.5) << i;
    }
    expectSubBoxesMatch(reader);
}

TEST(WarpReader, SixteenBitMaskWithBzero) {
    TempDir dir;
    RawWarp spec;
    spec.maskBitpix = USHORT_IMG;
    spec.mp.emplace_back("HIGH", 15);  // needs BZERO 32768 to be read as a positive value
    const MaskedImage written = writeRawWarp(dir.file("m16.fits"), spec, 11);
    const WarpReader reader(dir.file("m16.fits"));
    EXPECT_EQ(reader.header().maskPlanes.bitOf("HIGH"), 15);
    const MaskedImage got = reader.readAll();
    EXPECT_TRUE(sameBits(got.mask.data(), written.mask.data()));
    EXPECT_GT(countBit(got.mask.data(), 15), 0);
}

TEST(WarpReader, UnsignedThirtyTwoBitMask) {
    TempDir dir;
    RawWarp spec;
    spec.maskBitpix = ULONG_IMG;
    spec.mp.emplace_back("TOP", 31);
    const MaskedImage written = writeRawWarp(dir.file("m32u.fits"), spec, 12);
    const WarpReader reader(dir.file("m32u.fits"));
    const MaskedImage got = reader.readAll();
    EXPECT_TRUE(sameBits(got.mask.data(), written.mask.data()));
    EXPECT_GT(countBit(got.mask.data(), 31), 0);
}

TEST(WarpReader, ExttypeOnlyAndXy0Fallbacks) {
    TempDir dir;
    RawWarp spec;
    spec.extname = false;  // found by EXTTYPE, as in older afw files
    spec.xy0Cards = false;
    writeRawWarp(dir.file("ltv.fits"), spec);
    EXPECT_EQ(WarpReader(dir.file("ltv.fits")).header().box, spec.box);  // from -LTV1/2
    spec.ltvCards = false;
    writeRawWarp(dir.file("none.fits"), spec);
    EXPECT_EQ(WarpReader(dir.file("none.fits")).header().box, (Box{0, 0, spec.box.width, spec.box.height}));
}

TEST(WarpReader, FileNameWithBracketsIsLiteral) {
    TempDir dir;
    const std::string path = dir.file("warp[1].fits");
    RawWarp spec;
    const MaskedImage written = writeRawWarp(path, spec);
    const WarpReader reader(path);
    EXPECT_TRUE(sameBits(reader.readAll().image.data(), written.image.data()));
    expectInputError([&] { WarpReader r(dir.file("other[1].fits")); }, dir.file("other[1].fits"),
                     "no such file");
}

TEST(WarpReader, LegacyFluxMag0AndHeaderValues) {
    TempDir dir;
    const std::string path = dir.file("calib.fits");
    const double fluxMag0 = 2.0 * std::pow(10.0, 0.4 * 27.0);
    RawWarp spec;
    spec.primaryExtra = [fluxMag0](fitsfile* f) {
        int status = 0;
        double v = fluxMag0;
        fits_write_key(f, TDOUBLE, "FLUXMAG0", &v, "", &status);
        long visit = 908120;
        fits_write_key(f, TLONG, "EXPID", &visit, "", &status);
        double fwhm = 2.35482 * 1.75;
        fits_write_key(f, TDOUBLE, "FWHM", &fwhm, "", &status);
        fits_write_key_str(f, "FILTER", "HSC-I", "", &status);
    };
    writeRawWarp(path, spec);
    const WarpReader reader(path);
    const auto& h = reader.header();
    ASSERT_TRUE(h.calibrationMean.has_value());
    EXPECT_EQ(h.calibrationSource, "FLUXMAG0");
    // The card holds FLUXMAG0 with 15 significant digits.
    EXPECT_NEAR(*h.calibrationMean, safeclip::io::calibrationFromFluxMag0(fluxMag0), 1e-13);
    // c = referenceFlux / FLUXMAG0 with referenceFlux = 10^(0.4 * 31.4) nJy (~3631 Jy);
    // zero point 31.4 - 2.5 log10(c) = 2.5 log10(FLUXMAG0).
    EXPECT_NEAR(*h.calibrationMean, std::pow(10.0, -0.4 * (27.0 - 31.4)) / 2.0, 1e-12);
    EXPECT_NEAR(31.4 - 2.5 * std::log10(*h.calibrationMean), 2.5 * std::log10(fluxMag0), 1e-12);
    EXPECT_NEAR(safeclip::io::calibrationFromFluxMag0(1.0), 3631e9, 0.0003 * 3631e9);
    ASSERT_TRUE(h.psfSigma.has_value());
    EXPECT_NEAR(*h.psfSigma, 1.75, 1e-12);
    EXPECT_EQ(h.visit, 908120);
    EXPECT_EQ(h.filter, "HSC-I");
}

TEST(WarpReader, FluxMag0AndPsfSigmaInImageHdu) {
    TempDir dir;
    const std::string path = dir.file("calib-image.fits");
    RawWarp spec;
    spec.primaryExtra = [](fitsfile* f) {
        int status = 0;
        long visit = 17;
        fits_write_key(f, TLONG, "VISIT", &visit, "", &status);
        long expid = 99;
        fits_write_key(f, TLONG, "EXPID", &expid, "", &status);
    };
    spec.imageExtra = [](fitsfile* f) {
        int status = 0;
        double v = 1e11;
        fits_write_key(f, TDOUBLE, "FLUXMAG0", &v, "", &status);
        double sigma = 2.5;
        fits_write_key(f, TDOUBLE, "PSFSIGMA", &sigma, "", &status);
    };
    writeRawWarp(path, spec);
    const WarpReader reader(path);
    const auto& h = reader.header();
    EXPECT_EQ(h.calibrationSource, "FLUXMAG0");
    EXPECT_DOUBLE_EQ(h.calibrationMean.value_or(0.0), safeclip::io::calibrationFromFluxMag0(1e11));
    EXPECT_EQ(h.psfSigma, 2.5);
    EXPECT_EQ(h.visit, 17);  // VISIT wins over EXPID
}

TEST(WarpReader, PhotoCalibArchiveRecord) {
    using safeclip::io::Column;
    using safeclip::io::HeaderCard;
    using safeclip::io::Table;
    TempDir dir;
    MaskDict planes = MaskDict::defaults();
    const MaskedImage mi = makeImage(Box{0, 0, 8, 6}, planes, 2);
    const double calibrationMean = 0.3371846213765;
    for (const bool withCatN : {true, false}) {
        SCOPED_TRACE(withCatN ? "with AR_CATN" : "positional catalogs");
        const std::string path = dir.file(withCatN ? "pc.fits" : "pc-pos.fits");
        safeclip::io::ExposureData data;
        data.image = &mi;
        data.maskPlanes = &planes;
        data.primaryCards = {HeaderCard{"EXPINFO_V", std::int64_t{1}, ""},
                             HeaderCard{"PHOTOCALIB_ID", std::int64_t{3}, ""},
                             HeaderCard{"ARCHIVE_ID_PHOTOCALIB", std::int64_t{3}, ""},
                             HeaderCard{"AR_HDU", std::int64_t{5}, ""}};
        Table index{"ARCHIVE_INDEX",
                    {Column{"id", std::vector<std::int64_t>{1, 3}, ""},
                     Column{"cat.archive", std::vector<std::int64_t>{1, 2}, ""},
                     Column{"cat.persistable", std::vector<std::int64_t>{0, 0}, ""},
                     Column{"row0", std::vector<std::int64_t>{0, 1}, ""},
                     Column{"nrows", std::vector<std::int64_t>{1, 1}, ""},
                     Column{"name", std::vector<std::string>{"TanWcs", "PhotoCalib"}, ""},
                     Column{"module", std::vector<std::string>{"lsst.afw.geom", "lsst.afw.image"}, ""}}};
        Table wcs{"ARCHIVE_DATA", {Column{"crval", std::vector<double>{1.0}, ""}}};
        Table photo{"ARCHIVE_DATA",
                    {Column{"calibrationMean", std::vector<double>{99.0, calibrationMean}, ""},
                     Column{"calibrationErr", std::vector<double>{0.0, 0.01}, ""},
                     Column{"isConstant", std::vector<std::int64_t>{1, 1}, ""}}};
        data.tables = {index, wcs, photo};
        safeclip::io::writeExposure(path, data);
        if (withCatN) {
            fitsfile* f = nullptr;
            int status = 0;
            fits_open_diskfile(&f, path.c_str(), READWRITE, &status);
            for (int hdu = 5; hdu <= 7; ++hdu) {
                fits_movabs_hdu(f, hdu, nullptr, &status);
                long catn = hdu - 5;
                fits_write_key(f, TLONG, "AR_CATN", &catn, "", &status);
            }
            fits_close_file(f, &status);
            check(status, "add AR_CATN");
        }
        const WarpReader reader(path);
        const auto& h = reader.header();
        EXPECT_EQ(h.calibrationSource, "PhotoCalib");
        EXPECT_EQ(h.calibrationMean, calibrationMean);
    }
}

// afw's ExposureFitsReader reads FLUXMAG0 only for legacy files (EXPINFO_V absent or 0); from
// EXPINFO_V >= 1 on the archived PhotoCalib is the calibration and header cards are ignored. A warp
// with a PhotoCalib for zero point 28 (calibrationMean = 10^(-0.4 (28 - 31.4)) nJy per count) and a
// stale FLUXMAG0 card for zero point 27 (10^(0.4 * 27)): with EXPINFO_V = 1 its scale to a zero
// point-27 coadd is c / f27 = 10^(-0.4 (28 - 27)) = 0.398107 (the card would give 1.0); without
// EXPINFO_V (a legacy file) the card is the calibration.
TEST(WarpReader, PhotoCalibWinsOverAStaleFluxMag0FromExpInfoVersion1) {
    using safeclip::io::Column;
    using safeclip::io::HeaderCard;
    using safeclip::io::Table;
    TempDir dir;
    MaskDict planes = MaskDict::defaults();
    const MaskedImage mi = makeImage(Box{0, 0, 8, 6}, planes, 2);
    const double c28 = std::pow(10.0, -0.4 * (28.0 - 31.4));
    const double f27 = std::pow(10.0, -0.4 * (27.0 - 31.4));
    for (const int version : {1, 2, 0, -1}) {  // -1: no EXPINFO_V card
        SCOPED_TRACE("EXPINFO_V " + std::to_string(version));
        const std::string path = dir.file("v" + std::to_string(version + 1) + ".fits");
        safeclip::io::ExposureData data;
        data.image = &mi;
        data.maskPlanes = &planes;
        data.primaryCards = {HeaderCard{"FLUXMAG0", std::pow(10.0, 0.4 * 27.0), "stale"},
                             HeaderCard{"ARCHIVE_ID_PHOTOCALIB", std::int64_t{1}, ""},
                             HeaderCard{"AR_HDU", std::int64_t{5}, ""}};
        if (version >= 0) {
            data.primaryCards.push_back(HeaderCard{"EXPINFO_V", std::int64_t{version}, ""});
        }
        Table index{"ARCHIVE_INDEX",
                    {Column{"id", std::vector<std::int64_t>{1}, ""},
                     Column{"cat.archive", std::vector<std::int64_t>{1}, ""},
                     Column{"cat.persistable", std::vector<std::int64_t>{0}, ""},
                     Column{"row0", std::vector<std::int64_t>{0}, ""},
                     Column{"nrows", std::vector<std::int64_t>{1}, ""},
                     Column{"name", std::vector<std::string>{"PhotoCalib"}, ""},
                     Column{"module", std::vector<std::string>{"lsst.afw.image"}, ""}}};
        Table photo{"ARCHIVE_DATA",
                    {Column{"calibrationMean", std::vector<double>{c28}, ""},
                     Column{"calibrationErr", std::vector<double>{0.0}, ""},
                     Column{"isConstant", std::vector<std::int64_t>{1}, ""}}};
        data.tables = {index, photo};
        safeclip::io::writeExposure(path, data);
        const WarpReader reader(path);
        const auto& h = reader.header();
        ASSERT_TRUE(h.calibrationMean.has_value());
        if (version >= 1) {
            EXPECT_EQ(h.calibrationSource, "PhotoCalib");
            EXPECT_NEAR(*h.calibrationMean / f27, 0.398107, 1e-6);
        } else {
            EXPECT_EQ(h.calibrationSource, "FLUXMAG0");
            EXPECT_NEAR(*h.calibrationMean / f27, 1.0, 1e-12);
        }
    }
}

// ---- bad input -------------------------------------------------------------------------------------

TEST(WarpReaderBadInput, MissingFile) {
    TempDir dir;
    const std::string path = dir.file("missing.fits");
    expectInputError([&] { WarpReader r(path); }, path, "no such file");
}

TEST(WarpReaderBadInput, TextFile) {
    TempDir dir;
    const std::string path = dir.file("notes.fits");
    std::ofstream(path) << "this is not a FITS file\nat all\n";
    expectInputError([&] { WarpReader r(path); }, path, "not a FITS file");
    const std::string empty = dir.file("empty.fits");
    std::ofstream{empty};
    expectInputError([&] { WarpReader r(empty); }, empty, "empty");
    expectInputError([&] { WarpReader r(dir.file("")); }, dir.file(""), "directory");
}

TEST(WarpReaderBadInput, TruncatedFile) {
    TempDir dir;
    // A file written by safeclip, cut in half.
    const std::string path = dir.file("cut.fits");
    writeWarpFile(path, Box{0, 0, 100, 80}, 4);
    fs::resize_file(path, fs::file_size(path) / 2);
    expectInputError([&] { WarpReader r(path); }, path, "truncated");
    // The HSC file, cut in half.
    const std::string hsc = dir.file("hsc-cut.fits");
    fs::copy_file(kHsc, hsc);
    fs::resize_file(hsc, fs::file_size(hsc) / 2);
    expectInputError([&] { WarpReader r(hsc); }, hsc, "truncated");
    // Cut inside the header of the VARIANCE HDU.
    const std::string hsc2 = dir.file("hsc-cut2.fits");
    fs::copy_file(kHsc, hsc2);
    fs::resize_file(hsc2, 262080 + 1000);
    expectInputError([&] { WarpReader r(hsc2); }, hsc2, "truncated");
}

TEST(WarpReaderBadInput, MissingPlanes) {
    TempDir dir;
    RawWarp noMask;
    noMask.mask = false;
    writeRawWarp(dir.file("nomask.fits"), noMask);
    expectInputError([&] { WarpReader r(dir.file("nomask.fits")); }, dir.file("nomask.fits"), "MASK");
    RawWarp noVariance;
    noVariance.variance = false;
    writeRawWarp(dir.file("novar.fits"), noVariance);
    expectInputError([&] { WarpReader r(dir.file("novar.fits")); }, dir.file("novar.fits"), "VARIANCE");
    RawWarp noImage;
    noImage.image = false;
    writeRawWarp(dir.file("noimage.fits"), noImage);
    expectInputError([&] { WarpReader r(dir.file("noimage.fits")); }, dir.file("noimage.fits"), "IMAGE");
}

TEST(WarpReaderBadInput, MaskWithoutPlaneKeywords) {
    TempDir dir;
    RawWarp spec;
    spec.mp.clear();
    writeRawWarp(dir.file("nomp.fits"), spec);
    expectInputError([&] { WarpReader r(dir.file("nomp.fits")); }, dir.file("nomp.fits"),
                     "MASK HDU has no MP_* mask-plane keywords");
}

TEST(WarpReaderBadInput, DuplicateMaskBitsAndNames) {
    TempDir dir;
    RawWarp bits;
    bits.mp.emplace_back("CROSSTALK", 3);  // CR is 3 already
    writeRawWarp(dir.file("dupbit.fits"), bits);
    expectInputError([&] { WarpReader r(dir.file("dupbit.fits")); }, dir.file("dupbit.fits"),
                     "MASK: duplicate mask bit 3");
    RawWarp names;
    names.mp.emplace_back("SAT", 20);
    writeRawWarp(dir.file("dupname.fits"), names);
    expectInputError([&] { WarpReader r(dir.file("dupname.fits")); }, dir.file("dupname.fits"),
                     "duplicate mask plane name SAT");
    RawWarp range;
    range.mp.emplace_back("WIDE", 40);
    writeRawWarp(dir.file("range.fits"), range);
    expectInputError([&] { WarpReader r(dir.file("range.fits")); }, dir.file("range.fits"), "0..31");
}

TEST(WarpReaderBadInput, PlanesOfDifferentSizes) {
    TempDir dir;
    RawWarp spec;
    spec.maskBox = Box{spec.box.x0, spec.box.y0, spec.box.width - 1, spec.box.height};
    writeRawWarp(dir.file("sizes.fits"), spec);
    expectInputError([&] { WarpReader r(dir.file("sizes.fits")); }, dir.file("sizes.fits"),
                     "plane sizes differ");
}

TEST(WarpReaderBadInput, NotTwoDimensional) {
    TempDir dir;
    const std::string path = dir.file("cube.fits");
    fitsfile* f = nullptr;
    int status = 0;
    fits_create_diskfile(&f, path.c_str(), &status);
    fits_create_img(f, BYTE_IMG, 0, nullptr, &status);
    for (const char* name : {"IMAGE", "MASK", "VARIANCE"}) {
        long naxes[3] = {4, 4, 2};
        fits_create_img(f, std::string(name) == "MASK" ? LONG_IMG : FLOAT_IMG, 3, naxes, &status);
        fits_write_key_str(f, "EXTNAME", name, "", &status);
        std::vector<float> zeros(32, 0.0F);
        fits_write_img(f, TFLOAT, 1, 32, zeros.data(), &status);
    }
    fits_close_file(f, &status);
    check(status, "write cube");
    expectInputError([&] { WarpReader r(path); }, path, "2-D");
}

TEST(WarpReader, GzipCompressedFileIsNamedAsSuch) {
    // A .fits.gz warp used to be reported as "truncated file: HDU 3 needs N bytes but the file has
    // M" (issue 16 item 2): it is now named as gzip-compressed, with what to do.
    TempDir dir;
    const std::string path = dir.file("warp.fits");
    writeWarpFile(path, Box{0, 0, 40, 30}, 3);
    const std::string bytes = safeclip::test::readFile(path);
    const std::string gz = dir.file("warp.fits.gz");
    gzFile out = gzopen(gz.c_str(), "wb");
    ASSERT_NE(out, nullptr);
    ASSERT_EQ(gzwrite(out, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
    ASSERT_EQ(gzclose(out), Z_OK);
    try {
        const WarpReader reader(gz);
        ADD_FAILURE() << "a gzip file opened";
    } catch (const safeclip::InputError& e) {
        const std::string what = e.what();
        EXPECT_EQ(what.rfind(gz + ": gzip-compressed file", 0), 0U) << what;
        EXPECT_NE(what.find("gunzip"), std::string::npos) << what;
    }
}

TEST(WarpReader, ASingleHduExposureIsPointedToIngest) {
    // A raw exposure given where a warp is expected (issue 16 item 6): the error says what it looks
    // like and which command makes a warp of it. A file with three unnamed images is not "raw".
    TempDir dir;
    const std::string path = dir.file("raw.fits");
    fitsfile* fp = nullptr;
    int status = 0;
    long naxes[2] = {20, 10};
    std::vector<float> pix(200, 1.0F);
    fits_create_file(&fp, ("!" + path).c_str(), &status);
    fits_create_img(fp, FLOAT_IMG, 2, naxes, &status);
    fits_write_img(fp, TFLOAT, 1, 200, pix.data(), &status);
    fits_close_file(fp, &status);
    ASSERT_EQ(status, 0);
    try {
        const WarpReader reader(path);
        ADD_FAILURE() << "a raw exposure opened as a warp";
    } catch (const safeclip::InputError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find(path + ": no IMAGE HDU"), std::string::npos) << what;
        EXPECT_NE(what.find("single-HDU exposure"), std::string::npos) << what;
        EXPECT_NE(what.find("safeclip ingest"), std::string::npos) << what;
    }
}
