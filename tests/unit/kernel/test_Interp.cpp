/// @file test_Interp.cpp  Unit tests of coadd post-processing (spec §7.2.4-5, §8; Interp.h).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "safeclip/kernel/Interp.h"

namespace safeclip::kernel {
namespace {

constexpr MaskPixel kIntrp = 0x4;
constexpr MaskPixel kDetected = 0x20;
constexpr MaskPixel kNoData = 0x100;
constexpr MaskPixel kClipped = 0x200;
constexpr MaskPixel kRejected = 0x400;
constexpr MaskPixel kSensorEdge = 0x800;
constexpr MaskPixel kInexactPsf = 0x1000;
const float kNaNf = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

PostBits bits() {
    PostBits b;
    b.noData = kNoData;
    b.intrp = kIntrp;
    b.inexactPsf = kInexactPsf;
    b.inexactSources = kSensorEdge | kClipped | kRejected;
    return b;
}

/// A coadd on `box` with image values given row by row; NaN entries become NO_DATA holes
/// (NaN image, NaN variance) as the stacker writes them; other pixels get variance 1.
MaskedImage makeCoadd(const Box& box, const std::vector<float>& values) {
    MaskedImage mi(box);
    std::size_t k = 0;
    for (int y = box.y0; y < box.y1(); ++y) {
        for (int x = box.x0; x < box.x1(); ++x, ++k) {
            const float v = values.at(k);
            mi.image(x, y) = v;
            if (std::isnan(v)) {
                mi.mask(x, y) = kNoData;
                mi.variance(x, y) = kNaNf;
            } else {
                mi.mask(x, y) = 0;
                mi.variance(x, y) = 1.0F;
            }
        }
    }
    return mi;
}

TEST(Interp, InexactPsfFromSourceBits) {
    MaskedImage mi = makeCoadd(Box{0, 0, 5, 1}, {1, 2, 3, 4, 5});
    mi.mask(0, 0) = kClipped;
    mi.mask(1, 0) = kRejected | kDetected;
    mi.mask(2, 0) = kSensorEdge;
    mi.mask(3, 0) = kDetected;
    const PostResult r = postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_EQ(mi.mask(0, 0), kClipped | kInexactPsf);
    EXPECT_EQ(mi.mask(1, 0), kRejected | kDetected | kInexactPsf);
    EXPECT_EQ(mi.mask(2, 0), kSensorEdge | kInexactPsf);
    EXPECT_EQ(mi.mask(3, 0), kDetected);
    EXPECT_EQ(mi.mask(4, 0), 0);
    EXPECT_EQ(r.nNoData, 0);
    EXPECT_EQ(r.nInterpolated, 0);
    EXPECT_FLOAT_EQ(mi.image(2, 0), 3.0F);
}

TEST(Interp, RowLinearInteriorRun) {
    MaskedImage mi = makeCoadd(Box{-2, 7, 6, 1}, {1, kNaNf, kNaNf, 4, 5, 9});
    const PostResult r = postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_EQ(r.nNoData, 2);
    EXPECT_EQ(r.nInterpolated, 2);
    EXPECT_FLOAT_EQ(mi.image(-1, 7), 2.0F);
    EXPECT_FLOAT_EQ(mi.image(0, 7), 3.0F);
    EXPECT_EQ(mi.mask(-1, 7), kNoData | kIntrp);
    EXPECT_EQ(mi.mask(0, 7), kNoData | kIntrp);
    EXPECT_EQ(mi.variance(-1, 7), kInf);
    EXPECT_EQ(mi.variance(0, 7), kInf);
    // Good pixels untouched.
    EXPECT_EQ(mi.image(-2, 7), 1.0F);
    EXPECT_EQ(mi.image(1, 7), 4.0F);
    EXPECT_EQ(mi.mask(1, 7), 0);
    EXPECT_EQ(mi.variance(1, 7), 1.0F);
}

TEST(Interp, EdgeRunUsesFallbackMedian) {
    // Finite pixels 3, 5, 7, 20 -> median 6.
    MaskedImage mi = makeCoadd(Box{0, 0, 6, 1}, {kNaNf, kNaNf, 3, 5, 7, 20});
    PostResult r = postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_DOUBLE_EQ(r.fallbackValue, 6.0);
    EXPECT_FLOAT_EQ(mi.image(0, 0), 6.0F);
    EXPECT_FLOAT_EQ(mi.image(1, 0), 6.0F);
    EXPECT_EQ(mi.mask(0, 0), kNoData | kIntrp);
    EXPECT_EQ(r.nInterpolated, 2);

    // Right edge, and extension of the nearest good value when the fallback is not used at edges.
    mi = makeCoadd(Box{0, 0, 6, 1}, {kNaNf, 3, 5, 7, kNaNf, kNaNf});
    InterpControl c;
    c.useFallbackValueAtEdge = false;
    r = postProcessCoadd(mi, bits(), c);
    EXPECT_DOUBLE_EQ(r.fallbackValue, 5.0);
    EXPECT_FLOAT_EQ(mi.image(0, 0), 3.0F);
    EXPECT_FLOAT_EQ(mi.image(4, 0), 7.0F);
    EXPECT_FLOAT_EQ(mi.image(5, 0), 7.0F);
    EXPECT_EQ(r.nInterpolated, 3);
}

TEST(Interp, FallbackClampedUnlessNegativeAllowed) {
    const std::vector<float> vals{-3, -1, kNaNf, -2, kNaNf};
    MaskedImage mi = makeCoadd(Box{0, 0, 5, 1}, vals);
    PostResult r = postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_DOUBLE_EQ(r.fallbackValue, 0.0);
    EXPECT_FLOAT_EQ(mi.image(2, 0), -1.5F);  // interior: linear
    EXPECT_FLOAT_EQ(mi.image(4, 0), 0.0F);   // edge: clamped fallback

    mi = makeCoadd(Box{0, 0, 5, 1}, vals);
    InterpControl c;
    c.negativeFallbackAllowed = true;
    r = postProcessCoadd(mi, bits(), c);
    EXPECT_DOUBLE_EQ(r.fallbackValue, -2.0);
    EXPECT_FLOAT_EQ(mi.image(4, 0), -2.0F);
}

TEST(Interp, RowWithoutGoodPixelGetsFallbackEvenWithoutEdgeFallback) {
    MaskedImage mi = makeCoadd(Box{0, 0, 3, 3}, {1, 2, 3,              //
                                                 kNaNf, kNaNf, kNaNf,  //
                                                 10, 11, 12});
    InterpControl c;
    c.useFallbackValueAtEdge = false;
    const PostResult r = postProcessCoadd(mi, bits(), c);
    EXPECT_DOUBLE_EQ(r.fallbackValue, 6.5);  // median of 1,2,3,10,11,12
    for (int x = 0; x < 3; ++x) {
        EXPECT_FLOAT_EQ(mi.image(x, 1), 6.5F);
        EXPECT_EQ(mi.mask(x, 1), kNoData | kIntrp);
    }
    EXPECT_EQ(r.nInterpolated, 3);
}

TEST(Interp, TransposeInterpolatesAlongColumns) {
    const std::vector<float> vals{1,     100,   3,      //
                                  kNaNf, kNaNf, kNaNf,  //
                                  5,     300,   7};
    MaskedImage mi = makeCoadd(Box{0, 0, 3, 3}, vals);
    InterpControl c;
    c.transpose = true;
    PostResult r = postProcessCoadd(mi, bits(), c);
    EXPECT_EQ(r.nInterpolated, 3);
    EXPECT_FLOAT_EQ(mi.image(0, 1), 3.0F);
    EXPECT_FLOAT_EQ(mi.image(1, 1), 200.0F);
    EXPECT_FLOAT_EQ(mi.image(2, 1), 5.0F);
    EXPECT_EQ(mi.variance(1, 1), kInf);

    // Row mode on the same data: the middle row has no good pixel -> fallback (median 6).
    mi = makeCoadd(Box{0, 0, 3, 3}, vals);
    r = postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_DOUBLE_EQ(r.fallbackValue, 6.0);
    EXPECT_FLOAT_EQ(mi.image(1, 1), 6.0F);
}

TEST(Interp, ZeroVarianceBecomesNoDataAndIsInterpolated) {
    MaskedImage mi = makeCoadd(Box{0, 0, 4, 1}, {2, 50, 6, 8});
    mi.variance(1, 0) = 0.0F;
    PostResult r = postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_EQ(r.nNoData, 1);
    EXPECT_EQ(r.nInterpolated, 1);
    EXPECT_EQ(mi.mask(1, 0), kNoData | kIntrp);
    EXPECT_FLOAT_EQ(mi.image(1, 0), 4.0F);
    EXPECT_EQ(mi.variance(1, 0), kInf);
    // The fallback is the median of all finite pixels before interpolation, 50 included.
    EXPECT_DOUBLE_EQ(r.fallbackValue, 7.0);

    // Disabled interpolation: NO_DATA still set, no INTRP, image unchanged, variance +inf.
    mi = makeCoadd(Box{0, 0, 4, 1}, {2, 50, kNaNf, 8});
    mi.variance(1, 0) = 0.0F;
    InterpControl c;
    c.enabled = false;
    r = postProcessCoadd(mi, bits(), c);
    EXPECT_EQ(r.nNoData, 2);
    EXPECT_EQ(r.nInterpolated, 0);
    EXPECT_EQ(mi.mask(1, 0), kNoData);
    EXPECT_EQ(mi.image(1, 0), 50.0F);
    EXPECT_TRUE(std::isnan(mi.image(2, 0)));
    EXPECT_EQ(mi.mask(2, 0), kNoData);
    EXPECT_EQ(mi.variance(1, 0), kInf);
    EXPECT_EQ(mi.variance(2, 0), kInf);
}

TEST(Interp, VarianceFix) {
    MaskedImage mi = makeCoadd(Box{0, 0, 5, 1}, {1, 2, 3, 4, 5});
    mi.variance(0, 0) = -1.0F;
    mi.variance(1, 0) = kNaNf;
    mi.variance(2, 0) = 2.5F;
    mi.variance(3, 0) = -0.0F;
    mi.variance(4, 0) = 1e-30F;
    const PostResult r = postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_EQ(mi.variance(0, 0), kInf);
    EXPECT_EQ(mi.variance(1, 0), kInf);
    EXPECT_EQ(mi.variance(2, 0), 2.5F);
    EXPECT_EQ(mi.variance(3, 0), kInf);
    EXPECT_EQ(mi.variance(4, 0), 1e-30F);
    // Only the exact zero (-0 == 0) becomes NO_DATA; negative and NaN do not.
    EXPECT_EQ(r.nNoData, 1);
    EXPECT_EQ(mi.mask(0, 0), 0);
    EXPECT_EQ(mi.mask(1, 0), 0);
    EXPECT_EQ(mi.mask(3, 0), kNoData | kIntrp);
    EXPECT_FLOAT_EQ(mi.image(3, 0), 4.0F);  // between 3 and 5 (its own value was 4 anyway)
}

TEST(Interp, NonFiniteNonNoDataPixelIsNeitherFilledNorUsed) {
    // Pixel 1 is +inf without NO_DATA: it is not a defect, and it is not a good neighbour either,
    // so the NO_DATA run at 2..3 interpolates between pixel 0 and pixel 4.
    MaskedImage mi = makeCoadd(Box{0, 0, 5, 1}, {0, kInf, kNaNf, kNaNf, 8});
    const PostResult r = postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_EQ(r.nInterpolated, 2);
    EXPECT_EQ(mi.image(1, 0), kInf);
    EXPECT_EQ(mi.mask(1, 0), 0);
    EXPECT_FLOAT_EQ(mi.image(2, 0), 4.0F);
    EXPECT_FLOAT_EQ(mi.image(3, 0), 6.0F);
}

TEST(Interp, AllNoDataUsesZeroFallback) {
    MaskedImage mi = makeCoadd(Box{0, 0, 2, 2}, {kNaNf, kNaNf, kNaNf, kNaNf});
    const PostResult r = postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_EQ(r.nNoData, 4);
    EXPECT_EQ(r.nInterpolated, 4);
    EXPECT_DOUBLE_EQ(r.fallbackValue, 0.0);
    EXPECT_EQ(mi.image(1, 1), 0.0F);
    EXPECT_EQ(mi.mask(1, 1), kNoData | kIntrp);
}

TEST(Interp, TwoDimensionalHoleRowByRow) {
    // 5x3 with a 2x2 hole; each row interpolates independently.
    MaskedImage mi = makeCoadd(Box{0, 0, 5, 3}, {0, 1, 2, 3, 4,            //
                                                 0, kNaNf, kNaNf, 30, 40,  //
                                                 10, kNaNf, kNaNf, 13, 14});
    const PostResult r = postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_EQ(r.nInterpolated, 4);
    EXPECT_FLOAT_EQ(mi.image(1, 1), 10.0F);
    EXPECT_FLOAT_EQ(mi.image(2, 1), 20.0F);
    EXPECT_FLOAT_EQ(mi.image(1, 2), 11.0F);
    EXPECT_FLOAT_EQ(mi.image(2, 2), 12.0F);
}

}  // namespace
}  // namespace safeclip::kernel
