/// @file test_MaskDict.cpp  Unit tests of the mask-plane dictionary and per-file remapping (spec §1.3).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/MaskDict.h"

namespace safeclip::kernel {
namespace {

TEST(MaskDict, DefaultsAreAfwBits) {
    const MaskDict d = MaskDict::defaults();
    EXPECT_EQ(d.size(), 9U);
    const std::vector<std::string> names{
        "BAD", "SAT", "INTRP", "CR", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "SUSPECT", "NO_DATA"};
    for (std::size_t i = 0; i < names.size(); ++i) {
        EXPECT_EQ(d.bitOf(names[i]), static_cast<int>(i)) << names[i];
    }
    EXPECT_EQ(d.bitMask("NO_DATA"), 0x100);
    EXPECT_EQ(d.bitMask("EDGE"), 0x10);
    EXPECT_EQ(d.bitOf("CLIPPED"), -1);
    EXPECT_EQ(d.bitMask("CLIPPED"), 0);
    EXPECT_EQ(d.bitMask(std::vector<std::string>{"NO_DATA", "BAD", "SAT", "EDGE", "NOPE"}), 0x113);
}

TEST(MaskDict, CanonicalAppendsCoaddPlanes) {
    const MaskDict d = MaskDict::canonical();
    EXPECT_EQ(d.size(), 13U);
    EXPECT_EQ(d.bitOf("NO_DATA"), 8);
    EXPECT_EQ(d.bitOf("CLIPPED"), 9);
    EXPECT_EQ(d.bitOf("REJECTED"), 10);
    EXPECT_EQ(d.bitOf("SENSOR_EDGE"), 11);
    EXPECT_EQ(d.bitOf("INEXACT_PSF"), 12);
    const auto planes = d.planes();
    ASSERT_EQ(planes.size(), 13U);
    for (std::size_t i = 0; i < planes.size(); ++i) {
        EXPECT_EQ(planes[i].second, static_cast<int>(i));
    }
    EXPECT_EQ(planes[12].first, "INEXACT_PSF");
}

TEST(MaskDict, AddPlaneUsesLowestFreeBitAndIsIdempotent) {
    MaskDict d;
    d.setPlane("A", 0);
    d.setPlane("C", 2);
    EXPECT_EQ(d.addPlane("B"), 1);
    EXPECT_EQ(d.addPlane("D"), 3);
    EXPECT_EQ(d.addPlane("C"), 2);
    EXPECT_EQ(d.size(), 4U);
    const auto planes = d.planes();
    EXPECT_EQ(planes[1].first, "B");
    EXPECT_EQ(planes[2].first, "C");
    EXPECT_THROW(d.addPlane(""), InvalidParameter);
    for (int i = 4; i < 32; ++i) {
        std::string name = "P";
        name += std::to_string(i);  // (operator+ trips a GCC 12 -Wrestrict false positive)
        EXPECT_EQ(d.addPlane(name), i);
    }
    EXPECT_THROW(d.addPlane("ONE_TOO_MANY"), InvalidParameter);
    EXPECT_EQ(d.bitMask("P31"), static_cast<MaskPixel>(0x80000000U));
}

TEST(MaskDict, SetPlaneRejectsDuplicatesAndBadBits) {
    MaskDict d = MaskDict::defaults();
    EXPECT_THROW(d.setPlane("BAD", 20), InvalidParameter);       // duplicate name
    EXPECT_THROW(d.setPlane("CROSSTALK", 3), InvalidParameter);  // duplicate bit (CR)
    EXPECT_THROW(d.setPlane("CROSSTALK", 32), InvalidParameter);
    EXPECT_THROW(d.setPlane("CROSSTALK", -1), InvalidParameter);
    EXPECT_THROW(d.setPlane("", 20), InvalidParameter);
    EXPECT_EQ(d.size(), 9U);
    d.setPlane("CROSSTALK", 20);
    EXPECT_EQ(d.bitOf("CROSSTALK"), 20);
}

TEST(MaskRemap, FileBitsMapToCanonical) {
    // A file whose NO_DATA sits at bit 9 (CROSSTALK at 8), and a plane unknown to the canonical dict.
    MaskDict file;
    const std::vector<std::string> first{
        "BAD", "SAT", "INTRP", "CR", "EDGE", "DETECTED", "DETECTED_NEGATIVE", "SUSPECT"};
    for (std::size_t i = 0; i < first.size(); ++i) {
        file.setPlane(first[i], static_cast<int>(i));
    }
    file.setPlane("CROSSTALK", 8);
    file.setPlane("NO_DATA", 9);
    file.setPlane("CLIPPED", 14);
    MaskDict canon = MaskDict::canonical();
    const MaskRemap remap(file, canon);
    EXPECT_FALSE(remap.identity());
    EXPECT_EQ(canon.bitOf("CROSSTALK"), 13);  // appended after the coadd planes
    EXPECT_EQ(remap.apply(1 << 9), 1 << 8);   // NO_DATA 9 -> 8
    EXPECT_EQ(remap.apply(1 << 8), 1 << 13);  // CROSSTALK 8 -> 13
    EXPECT_EQ(remap.apply(1 << 14), 1 << 9);  // CLIPPED 14 -> 9
    EXPECT_EQ(remap.apply(0x3), 0x3);         // BAD|SAT unchanged
    EXPECT_EQ(remap.apply(1 << 20), 0);       // unnamed bit dropped
    EXPECT_EQ(remap.apply((1 << 9) | (1 << 20) | 0x20), (1 << 8) | 0x20);
    std::vector<MaskPixel> v{1 << 9, 1 << 8, 1 << 20, 0x21, 0};
    remap.applyInPlace(v.data(), v.size());
    EXPECT_EQ(v, (std::vector<MaskPixel>{1 << 8, 1 << 13, 0, 0x21, 0}));
}

TEST(MaskRemap, IdentityStillDropsUnnamedBits) {
    MaskDict canon = MaskDict::canonical();
    const MaskRemap remap(MaskDict::defaults(), canon);
    EXPECT_TRUE(remap.identity());
    EXPECT_EQ(canon.size(), 13U);  // nothing added
    EXPECT_EQ(remap.apply(0x1ff), 0x1ff);
    EXPECT_EQ(remap.apply(0x1ff | (1 << 15)), 0x1ff);
    std::vector<MaskPixel> v{0x100 | (1 << 30), 0x5};
    remap.applyInPlace(v.data(), v.size());
    EXPECT_EQ(v, (std::vector<MaskPixel>{0x100, 0x5}));
    // A default-constructed remap keeps everything.
    const MaskRemap none;
    EXPECT_EQ(none.apply(static_cast<MaskPixel>(0xffffffffU)), static_cast<MaskPixel>(0xffffffffU));
}

}  // namespace
}  // namespace safeclip::kernel
