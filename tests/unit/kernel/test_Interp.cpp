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
    // The variance plane is interpolated the same way (upstream's third do_defects call): 1 and 1.
    EXPECT_FLOAT_EQ(mi.variance(-1, 7), 1.0F);
    EXPECT_FLOAT_EQ(mi.variance(0, 7), 1.0F);
    // Good pixels untouched.
    EXPECT_EQ(mi.image(-2, 7), 1.0F);
    EXPECT_EQ(mi.image(1, 7), 4.0F);
    EXPECT_EQ(mi.mask(1, 7), 0);
    EXPECT_EQ(mi.variance(1, 7), 1.0F);
}

TEST(Interp, ShortEdgeRunIsExtrapolatedNotFallback) {
    // A run of <= 6 px at an edge is extrapolated from the two nearest good pixels with upstream's
    // LEFT/RIGHT coefficients (meas_algorithms Interp.cc do_defects): at distance d from the data
    // d=1: 1.4288·g1 - 0.4288·g2, d=2: 1.0933·g1 - 0.0933·g2, whatever the fallback (median 6).
    MaskedImage mi = makeCoadd(Box{0, 0, 6, 1}, {kNaNf, kNaNf, 3, 5, 7, 20});
    PostResult r = postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_DOUBLE_EQ(r.fallbackValue, 6.0);
    EXPECT_FLOAT_EQ(mi.image(0, 0), static_cast<float>(1.0933 * 3 - 0.0933 * 5));  // 2.8134
    EXPECT_FLOAT_EQ(mi.image(1, 0), static_cast<float>(1.4288 * 3 - 0.4288 * 5));  // 2.1424
    EXPECT_EQ(mi.mask(0, 0), kNoData | kIntrp);
    EXPECT_EQ(r.nInterpolated, 2);

    // Right edge (RIGHT case, mirrored), here with useFallbackValueAtEdge off (same rule for <= 6 px).
    mi = makeCoadd(Box{0, 0, 6, 1}, {kNaNf, 3, 5, 7, kNaNf, kNaNf});
    InterpControl c;
    c.useFallbackValueAtEdge = false;
    r = postProcessCoadd(mi, bits(), c);
    EXPECT_DOUBLE_EQ(r.fallbackValue, 5.0);
    EXPECT_FLOAT_EQ(mi.image(0, 0), static_cast<float>(1.4288 * 3 - 0.4288 * 5));  // 2.1424
    EXPECT_FLOAT_EQ(mi.image(4, 0), static_cast<float>(1.4288 * 7 - 0.4288 * 5));  // 7.8576
    EXPECT_FLOAT_EQ(mi.image(5, 0), static_cast<float>(1.0933 * 7 - 0.0933 * 5));  // 7.1866
    EXPECT_EQ(r.nInterpolated, 3);
}

/// Image 50 + x on one row of `width`, NO_DATA on [a, b).
MaskedImage rampWithHole(int width, int a, int b) {
    std::vector<float> v;
    for (int x = 0; x < width; ++x) {
        v.push_back(x >= a && x < b ? kNaNf : 50.0F + static_cast<float>(x));
    }
    return makeCoadd(Box{0, 0, width, 1}, v);
}

TEST(Interp, AuditExampleLeftEdgeThreePixels) {
    // Issue 12's audit example: image 50 + x, NO_DATA in columns 0-2. Upstream classifies the run as
    // LEFT, type 030 ("...##"), with out2_1 = 53, out2_2 = 54:
    //   x=0: 0.6968·53 + 0.3032·54 = 53.3032, x=1: 1.0933·53 - 0.0933·54 = 52.9067,
    //   x=2: 1.4288·53 - 0.4288·54 = 52.5712   (the old fallback gave the median, 78, 78, 78).
    MaskedImage mi = rampWithHole(60, 0, 3);
    // Variance 1 + 0.1·x on the good pixels: the variance plane gets the same coefficients,
    // x=0: 0.6968·1.3 + 0.3032·1.4 = 1.33032, x=1: 1.0933·1.3 - 0.0933·1.4 = 1.29067,
    // x=2: 1.4288·1.3 - 0.4288·1.4 = 1.25712.
    for (int x = 3; x < 60; ++x) {
        mi.variance(x, 0) = 1.0F + 0.1F * static_cast<float>(x);
    }
    const PostResult r = postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_EQ(r.nInterpolated, 3);
    EXPECT_NEAR(mi.image(0, 0), 53.3032, 1e-4);
    EXPECT_NEAR(mi.image(1, 0), 52.9067, 1e-4);
    EXPECT_NEAR(mi.image(2, 0), 52.5712, 1e-4);
    EXPECT_NEAR(mi.variance(0, 0), 1.33032, 1e-5);
    EXPECT_NEAR(mi.variance(1, 0), 1.29067, 1e-5);
    EXPECT_NEAR(mi.variance(2, 0), 1.25712, 1e-5);
    for (int x = 0; x < 3; ++x) {
        EXPECT_EQ(mi.mask(x, 0), kNoData | kIntrp);
    }
}

/// Upstream's taper of the 6 px of a long edge run nearest the data (type 01403 "##......##",
/// f2 f1 = fallback, g1 g2 = data), row k counted from the fallback side.
double taper01403(int k, double f, double g1, double g2) {
    const double c[6][4] = {{-0.5177, 1.3400, 0.0891, 0.0886}, {-0.2771, 0.9095, 0.1878, 0.1797},
                            {0.0677, 0.4614, 0.2725, 0.1984},  {0.1984, 0.2725, 0.4614, 0.0677},
                            {0.1797, 0.1878, 0.9095, -0.2771}, {0.0886, 0.0891, 1.3400, -0.5177}};
    return c[k][0] * f + c[k][1] * f + c[k][2] * g1 + c[k][3] * g2;
}

TEST(Interp, LongLeftEdgeRunFallbackBeyondSixThenTaper) {
    // 10-px left run on 50 + x (width 20): upstream (useFallbackValueAtEdge, nUseInterp = 6) sets
    // x = 0..3 to the fallback (median of 60..69 = 64.5), then treats x = 4..9 as a 6-px MIDDLE
    // defect between the fallback (out[2], out[3]) and the data (out[10] = 60, out[11] = 61):
    // 63.78895, 63.01950, 62.57935, 62.18675, 61.37065, 60.28195.
    MaskedImage mi = rampWithHole(20, 0, 10);
    const PostResult r = postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_DOUBLE_EQ(r.fallbackValue, 64.5);
    EXPECT_EQ(r.nInterpolated, 10);
    for (int x = 0; x < 4; ++x) {
        EXPECT_FLOAT_EQ(mi.image(x, 0), 64.5F);
        // The variance plane is filled the same way, with the same (image-median) fallback.
        EXPECT_FLOAT_EQ(mi.variance(x, 0), 64.5F);
    }
    const double expected[6] = {63.78895, 63.01950, 62.57935, 62.18675, 61.37065, 60.28195};
    for (int k = 0; k < 6; ++k) {
        EXPECT_NEAR(mi.image(4 + k, 0), expected[k], 1e-4) << k;
        EXPECT_NEAR(mi.image(4 + k, 0), taper01403(k, 64.5, 60, 61), 1e-4) << k;
        EXPECT_NEAR(mi.variance(4 + k, 0), taper01403(k, 64.5, 1, 1), 1e-4) << k;  // data variance 1
        EXPECT_EQ(mi.mask(4 + k, 0), kNoData | kIntrp);
    }
}

TEST(Interp, LongRightEdgeRunFallbackBeyondSixThenTaper) {
    // Mirror image (RIGHT/WIDE_RIGHT): NO_DATA x = 10..19, data out[9] = 59 (g1), out[8] = 58 (g2),
    // fallback median(50..59) = 54.5 on x = 16..19; x = 10..15 taper, x = 10 nearest the data.
    MaskedImage mi = rampWithHole(20, 10, 20);
    const PostResult r = postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_DOUBLE_EQ(r.fallbackValue, 54.5);
    for (int x = 16; x < 20; ++x) {
        EXPECT_FLOAT_EQ(mi.image(x, 0), 54.5F);
    }
    for (int d = 1; d <= 6; ++d) {
        EXPECT_NEAR(mi.image(9 + d, 0), taper01403(6 - d, 54.5, 59, 58), 1e-4) << d;
    }
    // x = 10: 0.0886·54.5 + 0.0891·54.5 + 1.3400·59 - 0.5177·58 = 58.71805
    EXPECT_NEAR(mi.image(10, 0), 58.71805, 1e-4);
}

TEST(Interp, LongEdgeRunWithoutEdgeFallbackIsExtrapolatedThroughout) {
    // useFallbackValueAtEdge off: upstream's LEFT (<= 10 px) / WIDE_LEFT tables, d = 1..6 as above and
    // 0.5·g1 + 0.5·g2 from d = 7 on. 10-px run on 50 + x: g1 = 60, g2 = 61.
    MaskedImage mi = rampWithHole(20, 0, 10);
    InterpControl c;
    c.useFallbackValueAtEdge = false;
    postProcessCoadd(mi, bits(), c);
    const double wn[6] = {1.4288, 1.0933, 0.6968, 0.5370, 0.5041, 0.5003};
    const double wf[6] = {-0.4288, -0.0933, 0.3032, 0.4630, 0.4959, 0.4997};
    for (int d = 1; d <= 10; ++d) {
        const double e = d <= 6 ? wn[d - 1] * 60 + wf[d - 1] * 61 : 60.5;
        EXPECT_NEAR(mi.image(10 - d, 0), e, 1e-4) << d;
    }
    EXPECT_NEAR(mi.image(9, 0), 59.5712, 1e-4);
}

TEST(Interp, InterpolatedVarianceNonPositiveOrNaNBecomesInfAfterwards) {
    // Left 3-px run, data variances 1 (x=3) and 5 (x=4): upstream extrapolates the variance
    // x=2: 1.4288·1 - 0.4288·5 = -0.7152 (<= 0 -> +inf by the variance fix that follows),
    // x=1: 1.0933 - 0.0933·5 = 0.6268, x=0: 0.6968 + 0.3032·5 = 2.2128 (kept).
    MaskedImage mi = rampWithHole(8, 0, 3);
    mi.variance(4, 0) = 5.0F;
    postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_EQ(mi.variance(2, 0), kInf);
    EXPECT_NEAR(mi.variance(1, 0), 0.6268, 1e-5);
    EXPECT_NEAR(mi.variance(0, 0), 2.2128, 1e-5);

    // Interior run next to a good pixel with NaN variance: the interpolated variance is NaN -> +inf;
    // the other filled pixel's variance too (linear between NaN and 1).
    mi = makeCoadd(Box{0, 0, 5, 1}, {1, kNaNf, kNaNf, 4, 5});
    mi.variance(0, 0) = kNaNf;
    postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_EQ(mi.variance(1, 0), kInf);
    EXPECT_EQ(mi.variance(2, 0), kInf);
    EXPECT_FLOAT_EQ(mi.image(1, 0), 2.0F);
}

TEST(Interp, FallbackClampedUnlessNegativeAllowed) {
    const std::vector<float> vals{-3, -1, kNaNf, -2, kNaNf};
    MaskedImage mi = makeCoadd(Box{0, 0, 5, 1}, vals);
    PostResult r = postProcessCoadd(mi, bits(), InterpControl{});
    EXPECT_DOUBLE_EQ(r.fallbackValue, 0.0);
    EXPECT_FLOAT_EQ(mi.image(2, 0), -1.5F);  // interior: linear
    // Edge, 1 px: extrapolated (RIGHT, d = 1) from -2 and the already filled -1.5 (upstream reads
    // the filled value): 1.4288·(-2) - 0.4288·(-1.5) = -2.2144; the fallback is not used.
    EXPECT_FLOAT_EQ(mi.image(4, 0), static_cast<float>(1.4288 * -2.0 - 0.4288 * -1.5));

    mi = makeCoadd(Box{0, 0, 5, 1}, vals);
    InterpControl c;
    c.negativeFallbackAllowed = true;
    r = postProcessCoadd(mi, bits(), c);
    EXPECT_DOUBLE_EQ(r.fallbackValue, -2.0);
    EXPECT_FLOAT_EQ(mi.image(4, 0), static_cast<float>(1.4288 * -2.0 - 0.4288 * -1.5));
    // A negative fallback shows where a run is longer than 6 px: 8 px, 2 of them the fallback.
    mi = makeCoadd(Box{0, 0, 10, 1}, {-3, -1, kNaNf, kNaNf, kNaNf, kNaNf, kNaNf, kNaNf, kNaNf, kNaNf});
    r = postProcessCoadd(mi, bits(), c);
    EXPECT_DOUBLE_EQ(r.fallbackValue, -2.0);
    EXPECT_FLOAT_EQ(mi.image(9, 0), -2.0F);
    EXPECT_FLOAT_EQ(mi.image(8, 0), -2.0F);
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
    EXPECT_FLOAT_EQ(mi.variance(1, 1), 1.0F);  // variance interpolated along the column too

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
    EXPECT_FLOAT_EQ(mi.variance(1, 0), 1.0F);  // interpolated like the image, not +inf
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
    // -0 is NO_DATA, so its variance is interpolated first: 0.5·2.5 + 0.5·1e-30 = 1.25 (> 0, kept).
    EXPECT_FLOAT_EQ(mi.variance(3, 0), 1.25F);
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
