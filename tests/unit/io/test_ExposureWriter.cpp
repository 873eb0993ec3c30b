// Tests of ExposureWriter: bit-for-bit round trips through WarpReader/readTable/readNImage, header
// cards, atomic replacement and failure handling.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <set>
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
using safeclip::OutputError;
using safeclip::io::Column;
using safeclip::io::ExposureData;
using safeclip::io::FitsFile;
using safeclip::io::HeaderCard;
using safeclip::io::Table;
using safeclip::io::WarpReader;
using safeclip::kernel::Box;
using safeclip::kernel::ImageF;
using safeclip::kernel::ImageU16;
using safeclip::kernel::MaskDict;
using safeclip::kernel::MaskedImage;
using safeclip::kernel::MaskPixel;

namespace {

const std::string kHsc = std::string(SAFECLIP_TEST_DATA) + "/hsc-lsst-format/HSC-0908120-056-small.fits";

using safeclip::test::readFile;
using safeclip::test::sameBits;
using safeclip::test::TempDir;

float floatFromBits(std::uint32_t bits) {
    float f = 0.0F;
    std::memcpy(&f, &bits, sizeof(f));
    return f;
}

/// Random bit patterns (every float class: NaN with payloads, inf, denormals, -0), plus a few
/// explicit special values.
MaskedImage randomBits(const Box& box, unsigned seed) {
    MaskedImage mi(box);
    std::mt19937 rng(seed);
    for (std::size_t i = 0; i < mi.image.data().size(); ++i) {
        mi.image.data()[i] = floatFromBits(rng());
        mi.variance.data()[i] = floatFromBits(rng());
        mi.mask.data()[i] = static_cast<MaskPixel>(rng());
    }
    auto& im = mi.image.data();
    im[0] = std::numeric_limits<float>::quiet_NaN();
    im[1] = std::numeric_limits<float>::infinity();
    im[2] = -std::numeric_limits<float>::infinity();
    im[3] = -0.0F;
    im[4] = std::numeric_limits<float>::denorm_min();
    im[5] = floatFromBits(0x7fc12345U);  // NaN with a payload
    im[6] = floatFromBits(0xffa00001U);  // negative NaN
    mi.variance.data()[0] = std::numeric_limits<float>::infinity();
    return mi;
}

MaskDict testPlanes() {
    MaskDict d = MaskDict::defaults();
    d.setPlane("CROSSTALK", 9);
    d.setPlane("CLIPPED", 12);
    d.setPlane("MY_PLANE", 20);
    d.setPlane("A_VERY_LONG_PLANE_NAME", 31);
    return d;
}

void expectOutputError(const std::function<void()>& fn, const std::string& path, const std::string& word) {
    testing::internal::CaptureStderr();
    const std::string what = safeclip::test::expectErrorNaming<OutputError>(fn, path, word);
    EXPECT_EQ(what.compare(0, path.size() + 1, path + ":"), 0) << what;
    EXPECT_EQ(what.find(".tmp."), std::string::npos) << what;
    EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

void expectSameColumn(const Column& a, const Column& b) {
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.unit, b.unit);
    ASSERT_EQ(a.data.index(), b.data.index()) << a.name;
    if (const auto* d = std::get_if<std::vector<double>>(&a.data)) {
        EXPECT_TRUE(sameBits(*d, std::get<std::vector<double>>(b.data))) << a.name;
    } else if (const auto* i = std::get_if<std::vector<std::int64_t>>(&a.data)) {
        EXPECT_EQ(*i, std::get<std::vector<std::int64_t>>(b.data)) << a.name;
    } else {
        EXPECT_EQ(std::get<std::vector<std::string>>(a.data), std::get<std::vector<std::string>>(b.data))
            << a.name;
    }
}

std::string rstrip(std::string s) {
    while (!s.empty() && s.back() == ' ') {
        s.pop_back();
    }
    return s;
}

}  // namespace

TEST(ExposureWriter, RoundTripBitForBit) {
    TempDir dir;
    const std::string path = dir.file("coadd.fits");
    const Box box{-37, 1200, 61, 47};
    const MaskedImage mi = randomBits(box, 42);
    const MaskDict planes = testPlanes();
    ImageU16 nImage(box);
    std::mt19937 rng(9);
    for (auto& n : nImage.data()) {
        n = static_cast<std::uint16_t>(rng());
    }
    nImage.data()[0] = 0;
    nImage.data()[1] = 65535;
    const std::vector<std::string> wcsCards = WarpReader(kHsc).header().wcsCards;
    ASSERT_FALSE(wcsCards.empty());

    const std::string longText(150, 'x');
    ExposureData data;
    data.image = &mi;
    data.maskPlanes = &planes;
    data.wcsCards = wcsCards;
    data.wcsCards.emplace_back("");  // blank cards are skipped
    data.nImage = &nImage;
    data.primaryCards = {
        HeaderCard{"FLUXMAG0", 6.309573444801943e10, "legacy zero point"},
        HeaderCard{"VISIT", std::int64_t{908120}, ""},
        HeaderCard{"BIGINT", std::int64_t{-9007199254740993}, ""},
        HeaderCard{"TINY", 1e-300, ""},
        HeaderCard{"THIRD", 1.0 / 3.0, ""},
        HeaderCard{"DOCLIP", true, ""},
        HeaderCard{"NOCLIP", false, ""},
        HeaderCard{"FILTER", std::string("HSC-I"), "band"},
        HeaderCard{"LONGSTR", longText, ""},
        HeaderCard{"SAFECLIP_GIT_REVISION", std::string("0123456789ab"), "HIERARCH key"},
    };
    Table inputs{
        "INPUTS",
        {Column{"visit",
                std::vector<std::int64_t>{1, -2, std::numeric_limits<std::int64_t>::max(),
                                          std::numeric_limits<std::int64_t>::min()},
                ""},
         Column{"weight",
                std::vector<double>{0.1, std::numeric_limits<double>::quiet_NaN(),
                                    -std::numeric_limits<double>::infinity(), -0.0},
                "count-2"},
         Column{"file", std::vector<std::string>{"a.fits", "", "dir/with space.fits", std::string(70, 'z')},
                ""}}};
    Table empty{"EMPTY",
                {Column{"n", std::vector<std::int64_t>{}, ""}, Column{"s", std::vector<std::string>{}, ""}}};
    Table blanks{"BLANKS", {Column{"s", std::vector<std::string>{"", ""}, ""}}};
    data.tables = {inputs, empty, blanks};
    safeclip::io::writeExposure(path, data);
    EXPECT_EQ(dir.list(), (std::set<std::string>{"coadd.fits"}));

    // Pixels, mask planes, xy0 and WCS through WarpReader.
    const WarpReader reader(path);
    const auto& h = reader.header();
    EXPECT_EQ(h.box, box);
    EXPECT_EQ(h.maskPlanes.planes(), planes.planes());
    ASSERT_EQ(h.wcsCards.size(), wcsCards.size());
    for (std::size_t i = 0; i < wcsCards.size(); ++i) {
        EXPECT_EQ(rstrip(h.wcsCards[i]), rstrip(wcsCards[i]));
    }
    EXPECT_EQ(h.visit, 908120);
    EXPECT_EQ(h.filter, "HSC-I");
    EXPECT_EQ(h.calibrationSource, "FLUXMAG0");
    const MaskedImage back = reader.readAll();
    EXPECT_TRUE(sameBits(back.image.data(), mi.image.data()));
    EXPECT_TRUE(sameBits(back.mask.data(), mi.mask.data()));
    EXPECT_TRUE(sameBits(back.variance.data(), mi.variance.data()));

    // NIMAGE.
    const ImageU16 n = safeclip::io::readNImage(path);
    EXPECT_EQ(n.box(), box);
    EXPECT_TRUE(sameBits(n.data(), nImage.data()));

    // Tables.
    for (const Table& t : data.tables) {
        SCOPED_TRACE(t.extname);
        const Table got = safeclip::io::readTable(path, t.extname);
        EXPECT_EQ(got.extname, t.extname);
        ASSERT_EQ(got.columns.size(), t.columns.size());
        for (std::size_t c = 0; c < t.columns.size(); ++c) {
            expectSameColumn(got.columns[c], t.columns[c]);
        }
    }

    // Primary cards, and the afw layout cards of the image HDUs.
    FitsFile f(path, FitsFile::Mode::Read);
    EXPECT_EQ(f.numHdus(), 8);
    f.moveToHdu(1);
    EXPECT_EQ(f.readDouble("FLUXMAG0"), 6.309573444801943e10);
    EXPECT_EQ(f.readInt("BIGINT"), -9007199254740993);
    EXPECT_EQ(f.readDouble("TINY"), 1e-300);
    EXPECT_EQ(f.readDouble("THIRD"), 1.0 / 3.0);
    EXPECT_EQ(f.readInt("DOCLIP"), 1);
    EXPECT_EQ(f.readInt("NOCLIP"), 0);
    EXPECT_EQ(f.readString("LONGSTR"), longText);
    EXPECT_EQ(f.readString("SAFECLIP_GIT_REVISION"), "0123456789ab");
    EXPECT_EQ(f.readInt("NAXIS"), 0);
    EXPECT_EQ(f.readInt("EXTEND"), 1);
    for (const char* name : {"IMAGE", "MASK", "VARIANCE", "NIMAGE"}) {
        SCOPED_TRACE(name);
        const auto hdu = f.findExtension(name);
        ASSERT_TRUE(hdu.has_value());
        f.moveToHdu(*hdu);
        EXPECT_EQ(f.readString("EXTNAME"), name);
        EXPECT_EQ(f.readString("EXTTYPE"), name);
        EXPECT_EQ(f.readInt("INHERIT"), 1);
        EXPECT_EQ(f.readInt("LTV1"), 37);
        EXPECT_EQ(f.readInt("LTV2"), -1200);
        EXPECT_EQ(f.readString("CTYPE1A"), "LINEAR");
        EXPECT_EQ(f.readString("CTYPE2A"), "LINEAR");
        EXPECT_EQ(f.readInt("CRPIX1A"), 1);
        EXPECT_EQ(f.readInt("CRPIX2A"), 1);
        EXPECT_EQ(f.readInt("CRVAL1A"), -37);
        EXPECT_EQ(f.readInt("CRVAL2A"), 1200);
        EXPECT_EQ(f.readString("CUNIT1A"), "PIXEL");
        EXPECT_EQ(f.readString("CTYPE1"), "RA---TAN-SIP");
    }
    f.moveToHdu(*f.findExtension("IMAGE"));
    EXPECT_EQ(f.readInt("BITPIX"), -32);
    f.moveToHdu(*f.findExtension("MASK"));
    EXPECT_EQ(f.readInt("BITPIX"), 32);
    EXPECT_EQ(f.readInt("MP_NO_DATA"), 8);
    EXPECT_EQ(f.readInt("MP_A_VERY_LONG_PLANE_NAME"), 31);
    f.moveToHdu(*f.findExtension("NIMAGE"));
    EXPECT_EQ(f.readInt("BITPIX"), 16);
    EXPECT_EQ(f.readInt("BZERO"), 32768);
    f.moveToHdu(*f.findExtension("INPUTS"));
    EXPECT_EQ(f.readString("TFORM1"), "K");
    EXPECT_EQ(f.readString("TFORM2"), "D");
    EXPECT_EQ(f.readString("TFORM3"), "70A");
    f.moveToHdu(*f.findExtension("BLANKS"));
    EXPECT_EQ(f.readString("TFORM1"), "1A");
}

TEST(ExposureWriter, MaskRemapAfterRoundTrip) {
    // Write with a file dictionary whose NO_DATA is at bit 9 (as in the HSC file) and read into the
    // canonical dictionary: every named plane keeps its name.
    TempDir dir;
    const std::string path = dir.file("remap.fits");
    MaskDict file;
    file.setPlane("BAD", 0);
    file.setPlane("CROSSTALK", 8);
    file.setPlane("NO_DATA", 9);
    file.setPlane("DETECTED", 5);
    MaskedImage mi(Box{3, 4, 4, 2});
    mi.mask.data() = {0, 1, 1 << 8, 1 << 9, (1 << 9) | (1 << 5), 1 << 30, 0, 1};
    ExposureData data;
    data.image = &mi;
    data.maskPlanes = &file;
    safeclip::io::writeExposure(path, data);
    WarpReader reader(path);
    MaskDict canonical = MaskDict::canonical();
    reader.conformTo(canonical);
    const int crosstalk = canonical.bitOf("CROSSTALK");
    EXPECT_EQ(crosstalk, 13);
    const std::vector<MaskPixel> expected = {0, 1, 1 << crosstalk, 1 << 8, (1 << 8) | (1 << 5), 0, 0, 1};
    EXPECT_EQ(reader.readAll().mask.data(), expected);  // unnamed bit 30 is dropped
}

TEST(ExposureWriter, MissingDirectoryFailsCleanly) {
    TempDir dir;
    const std::string path = dir.file("no-such-dir/coadd.fits");
    const MaskedImage mi = randomBits(Box{0, 0, 5, 5}, 1);
    const MaskDict planes = MaskDict::defaults();
    ExposureData data;
    data.image = &mi;
    data.maskPlanes = &planes;
    expectOutputError([&] { safeclip::io::writeExposure(path, data); }, path, "does not exist");
    EXPECT_TRUE(dir.list().empty());
    expectOutputError(
        [&] {
            safeclip::io::writeImageHdus(path, {{"TRUTH", &mi.image}}, {});
        },
        path, "does not exist");
    EXPECT_TRUE(dir.list().empty());
}

TEST(ExposureWriter, ExistingFileReplacedOnlyByCompleteFile) {
    TempDir dir;
    const std::string path = dir.file("coadd.fits");
    const MaskDict planes = MaskDict::defaults();
    const MaskedImage first = randomBits(Box{0, 0, 30, 20}, 1);
    ExposureData data;
    data.image = &first;
    data.maskPlanes = &planes;
    safeclip::io::writeExposure(path, data);
    const std::string before = readFile(path);

    // A failure after the image HDUs were written (inconsistent table) leaves the old file.
    const MaskedImage second = randomBits(Box{0, 0, 30, 20}, 2);
    ExposureData bad = data;
    bad.image = &second;
    bad.tables = {Table{
        "T", {Column{"a", std::vector<std::int64_t>{1, 2}, ""}, Column{"b", std::vector<double>{1.0}, ""}}}};
    expectOutputError([&] { safeclip::io::writeExposure(path, bad); }, path, "column b");
    EXPECT_EQ(readFile(path), before);
    EXPECT_EQ(dir.list(), (std::set<std::string>{"coadd.fits"}));

    // A stale temporary of this pid is replaced, and a good write replaces the file.
    std::ofstream(path + ".tmp." + std::to_string(::getpid())) << "stale";
    ExposureData good = data;
    good.image = &second;
    safeclip::io::writeExposure(path, good);
    EXPECT_EQ(dir.list(), (std::set<std::string>{"coadd.fits"}));
    EXPECT_TRUE(sameBits(WarpReader(path).readAll().image.data(), second.image.data()));
}

TEST(ExposureWriter, InvalidArguments) {
    TempDir dir;
    const std::string path = dir.file("x.fits");
    const MaskDict planes = MaskDict::defaults();
    ExposureData data;
    data.maskPlanes = &planes;
    EXPECT_THROW(safeclip::io::writeExposure(path, data), InvalidParameter);
    MaskedImage mi(Box{0, 0, 4, 4});
    mi.variance = ImageF(Box{0, 0, 3, 4});
    data.image = &mi;
    EXPECT_THROW(safeclip::io::writeExposure(path, data), InvalidParameter);
    EXPECT_TRUE(dir.list().empty());
}

// BUNIT (issue 16 item 9): IMAGE gets the unit, VARIANCE its square, MASK none; no card without a unit.
TEST(ExposureWriter, ImageAndVarianceUnits) {
    TempDir dir;
    const MaskDict planes = MaskDict::defaults();
    const MaskedImage mi(Box{3, 4, 5, 6});
    ExposureData data;
    data.image = &mi;
    data.maskPlanes = &planes;
    const std::string none = dir.file("none.fits");
    safeclip::io::writeExposure(none, data);
    data.imageUnit = "count";
    data.imageUnitComment = "mag = ZEROPNT - 2.5 log10(IMAGE)";
    const std::string with = dir.file("with.fits");
    safeclip::io::writeExposure(with, data);
    auto unitOf = [](const std::string& path, const std::string& hdu) {
        const safeclip::io::FitsFile f(path, safeclip::io::FitsFile::Mode::Read);
        f.moveToHdu(*f.findExtension(hdu));
        return f.readString("BUNIT");
    };
    EXPECT_EQ(unitOf(with, "IMAGE"), std::optional<std::string>("count"));
    EXPECT_EQ(unitOf(with, "VARIANCE"), std::optional<std::string>("count2"));
    EXPECT_EQ(unitOf(with, "MASK"), std::nullopt);
    EXPECT_EQ(unitOf(none, "IMAGE"), std::nullopt);
    EXPECT_TRUE(safeclip::io::checkFitsIntegrity(with).problem.empty());
}

TEST(ExposureWriter, ImageHdusRoundTrip) {
    TempDir dir;
    const std::string path = dir.file("truth.fits");
    ImageF a(Box{10, -5, 7, 3});
    ImageF b(Box{0, 0, 2, 9});
    std::mt19937 rng(3);
    for (auto& v : a.data()) {
        v = floatFromBits(rng());
    }
    for (auto& v : b.data()) {
        v = floatFromBits(rng());
    }
    safeclip::io::writeImageHdus(path, {{"TRUTH_IMAGE", &a}, {"TRUTH_VARIANCE", &b}},
                                 {HeaderCard{"SEED", std::int64_t{3}, ""}});
    const ImageF ra = safeclip::io::readImageHdu(path, "TRUTH_IMAGE");
    const ImageF rb = safeclip::io::readImageHdu(path, "TRUTH_VARIANCE");
    EXPECT_EQ(ra.box(), a.box());
    EXPECT_EQ(rb.box(), b.box());
    EXPECT_TRUE(sameBits(ra.data(), a.data()));
    EXPECT_TRUE(sameBits(rb.data(), b.data()));
    EXPECT_EQ(dir.list(), (std::set<std::string>{"truth.fits"}));
    EXPECT_THROW((void)safeclip::io::readImageHdu(path, "NOPE"), InputError);
    EXPECT_THROW((void)safeclip::io::readNImage(path), InputError);
    EXPECT_THROW((void)safeclip::io::readTable(path, "INPUTS"), InputError);
    EXPECT_THROW((void)safeclip::io::readTable(dir.file("missing.fits"), "INPUTS"), InputError);
    // An image HDU is not a table.
    EXPECT_THROW((void)safeclip::io::readTable(path, "TRUTH_IMAGE"), InputError);
}

TEST(ExposureWriter, ReadTableOfAfwArchive) {
    // The ARCHIVE_INDEX of the real HSC file (found by EXTTYPE): int and string columns.
    const Table t = safeclip::io::readTable(kHsc, "ARCHIVE_INDEX");
    ASSERT_EQ(t.columns.size(), 7U);
    EXPECT_EQ(t.columns[0].name, "id");
    EXPECT_EQ(std::get<std::vector<std::int64_t>>(t.columns[1].data), (std::vector<std::int64_t>{1, 2}));
    EXPECT_EQ(std::get<std::vector<std::string>>(t.columns[5].data),
              (std::vector<std::string>{"TanWcs", "TanWcs"}));
}

TEST(FitsFile, ErrorsAreOneLineWithPath) {
    TempDir dir;
    const std::string path = dir.file("exists.fits");
    std::ofstream(path) << "x";
    try {
        FitsFile f(path, FitsFile::Mode::Create);
        FAIL() << "created over an existing file";
    } catch (const OutputError& e) {
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("exists"), std::string::npos);
    }
    try {
        safeclip::io::throwFitsError(path, "read IMAGE", 107, false);
    } catch (const InputError& e) {
        EXPECT_EQ(std::string(e.what()), path + ": read IMAGE: tried to move past end of file");
    }
    FitsFile hsc(kHsc, FitsFile::Mode::Read);
    EXPECT_FALSE(hsc.findExtension("NOPE").has_value());
    EXPECT_EQ(hsc.findExtension("MASK"), 3);
    EXPECT_FALSE(hsc.readDouble("NOSUCHKEY").has_value());
    EXPECT_FALSE(hsc.writing());
    FitsFile moved(std::move(hsc));
    EXPECT_EQ(moved.numHdus(), 7);
    moved.close();
}
