// Output integrity (issue 13 item 4): every HDU the writer makes carries DATASUM and CHECKSUM with
// fixed comments (the same content gives the same bytes, whenever it is written), and
// checkFitsIntegrity finds truncation, zeroed blocks, flipped bits and appended bytes.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "Files.h"
#include "TempDir.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/FitsFile.h"
#include "safeclip/kernel/MaskDict.h"

using namespace safeclip;
using safeclip::test::TempDir;

namespace {

/// A small exposure with NIMAGE and one table.
void writeSmall(const std::string& path) {
    const kernel::Box box{3, -4, 40, 30};
    kernel::MaskedImage mi(box);
    for (std::size_t i = 0; i < mi.image.data().size(); ++i) {
        mi.image.data()[i] = static_cast<float>(i % 97) * 0.5F;
        mi.variance.data()[i] = 1.0F + static_cast<float>(i % 5);
        mi.mask.data()[i] = static_cast<kernel::MaskPixel>(i % 3);
    }
    kernel::ImageU16 nImage(box);
    for (auto& n : nImage.data()) {
        n = 4;
    }
    const kernel::MaskDict planes = kernel::MaskDict::canonical();
    io::ExposureData data;
    data.image = &mi;
    data.maskPlanes = &planes;
    data.nImage = &nImage;
    data.primaryCards = {{"PATCH", std::string("p"), "patch"}};
    data.tables.push_back({"INPUTS",
                           {{"file", std::vector<std::string>{"a.fits", "b.fits"}, ""},
                            {"size", std::vector<std::int64_t>{10, 20}, "byte"}}});
    io::writeExposure(path, data);
}

void writeBytes(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace

TEST(OutputIntegrity, EveryHduHasChecksumsThatVerify) {
    TempDir dir;
    const std::string path = dir.file("c.fits");
    writeSmall(path);
    const io::FitsIntegrity r = io::checkFitsIntegrity(path);
    EXPECT_EQ(r.problem, "");
    EXPECT_EQ(r.extnames, (std::vector<std::string>{"IMAGE", "MASK", "VARIANCE", "NIMAGE", "INPUTS"}));
    io::FitsFile f(path, io::FitsFile::Mode::Read);
    for (int hdu = 1; hdu <= f.numHdus(); ++hdu) {
        f.moveToHdu(hdu);
        int dataOk = 0;
        int hduOk = 0;
        int status = 0;
        fits_verify_chksum(f.get(), &dataOk, &hduOk, &status);
        EXPECT_EQ(status, 0);
        EXPECT_EQ(dataOk, 1) << "HDU " << hdu;
        EXPECT_EQ(hduOk, 1) << "HDU " << hdu;
    }
}

TEST(OutputIntegrity, SameContentSameBytesAtAnotherTime) {
    TempDir dir;
    writeSmall(dir.file("a.fits"));
    // cfitsio stamps the time (to the second) into the checksum comments unless they are fixed.
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    writeSmall(dir.file("b.fits"));
    EXPECT_TRUE(test::readFile(dir.file("a.fits")) == test::readFile(dir.file("b.fits")));
}

TEST(OutputIntegrity, DamageIsFound) {
    TempDir dir;
    const std::string good = dir.file("good.fits");
    writeSmall(good);
    const std::string bytes = test::readFile(good);
    ASSERT_EQ(bytes.size() % 2880, 0U);
    const std::string path = dir.file("bad.fits");
    // A file cut at an HDU boundary is whole as far as it goes: it shows as missing HDUs (the
    // caller knows which HDUs it expects).
    const std::vector<std::string> all = {"IMAGE", "MASK", "VARIANCE", "NIMAGE", "INPUTS"};
    auto problem = [&](const std::string& damaged) {
        writeBytes(path, damaged);
        const io::FitsIntegrity r = io::checkFitsIntegrity(path);
        return r.problem.empty() && r.extnames != all ? std::string("missing HDUs") : r.problem;
    };
    EXPECT_NE(problem(bytes.substr(0, bytes.size() / 2)), "");
    EXPECT_NE(problem(bytes.substr(0, bytes.size() * 9 / 10)), "");
    EXPECT_NE(problem(bytes.substr(0, bytes.size() - 1)), "");
    EXPECT_NE(problem(bytes.substr(0, bytes.size() - 2880)), "");  // a whole block: the table is cut
    std::string zeroed = bytes;
    std::fill(zeroed.begin() + 6000, zeroed.begin() + 6000 + 4096, '\0');
    EXPECT_NE(problem(zeroed), "");
    for (const std::size_t at :
         {std::size_t{100}, std::size_t{2880 + 500}, std::size_t{9000}, bytes.size() - 3000}) {
        std::string flipped = bytes;
        flipped[at] = static_cast<char>(flipped[at] ^ 0x04);
        EXPECT_NE(problem(flipped), "") << "bit flipped at byte " << at;
    }
    EXPECT_NE(problem(bytes + "garbage"), "");
    EXPECT_NE(problem(bytes + std::string(2880, '\0')), "");
    EXPECT_NE(problem(""), "");
    EXPECT_NE(io::checkFitsIntegrity(dir.file("missing.fits")).problem, "");
    EXPECT_EQ(problem(bytes), "");
}
