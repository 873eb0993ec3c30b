/// @file test_Detect.cpp  Smoothing kernel, smoothing, thresholds and footprint detection (spec §6.1),
/// including the tiling property used later by the tiled driver.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "safeclip/kernel/Detect.h"
#include "safeclip/kernel/Error.h"

namespace safeclip::kernel {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

/// Copy of `img` restricted to `box` (which must lie inside img.box()).
ImageF subImage(const ImageF& img, const Box& box) {
    ImageF out(box);
    for (int y = box.y0; y < box.y1(); ++y) {
        for (int x = box.x0; x < box.x1(); ++x) {
            out(x, y) = img(x, y);
        }
    }
    return out;
}

SpanSet unionOf(const std::vector<SpanSet>& fps) {
    return uniteAll(fps);
}

/// The set plus its 8-neighbours (3x3 square dilation).
SpanSet grow8(const SpanSet& s) {
    std::vector<Span> out;
    for (const Span& sp : s.spans()) {
        for (int dy = -1; dy <= 1; ++dy) {
            out.push_back(Span{sp.y + dy, sp.x0 - 1, sp.x1 + 1});
        }
    }
    return SpanSet::fromSpans(out);
}

/// Disk dilation by brute force, for expected footprints.
SpanSet bruteDilate(const SpanSet& s, int r, const Box& clip) {
    std::vector<Span> out;
    for (const Span& sp : s.spans()) {
        for (int x = sp.x0; x <= sp.x1; ++x) {
            for (int dy = -r; dy <= r; ++dy) {
                for (int dx = -r; dx <= r; ++dx) {
                    if (dx * dx + dy * dy <= r * r && clip.contains(x + dx, sp.y + dy)) {
                        out.push_back(Span{sp.y + dy, x + dx, x + dx});
                    }
                }
            }
        }
    }
    return SpanSet::fromSpans(out);
}

TEST(Detect, KernelSizeAndNormalisationSigma2) {
    const std::vector<double> g = gaussianKernel1D(2.0, 7.0);
    ASSERT_EQ(g.size(), 15U);  // K = 2*floor(floor(14.5)/2)+1 = 15
    double sum = 0.0;
    for (double v : g) {
        sum += v;
    }
    EXPECT_NEAR(sum, 1.0, 1e-15);
    for (std::size_t t = 0; t < 7; ++t) {
        EXPECT_DOUBLE_EQ(g[t], g[14 - t]);
        EXPECT_LT(g[t], g[t + 1]);
    }
    EXPECT_NEAR(g[8] / g[7], std::exp(-1.0 / 8.0), 1e-14);
    EXPECT_NEAR(g[14] / g[7], std::exp(-49.0 / 8.0), 1e-14);

    DetectControl ctrl;
    EXPECT_EQ(ctrl.kernelHalfWidth(), 7);
    EXPECT_EQ(ctrl.growRadius(), 4);  // int(2*2 + 0.5)
    ctrl.psfSigma = 1.5;              // floor(11.0) = 11 -> K = 11
    EXPECT_EQ(ctrl.kernelHalfWidth(), 5);
    EXPECT_EQ(gaussianKernel1D(1.5, 7.0).size(), 11U);
    EXPECT_EQ(ctrl.growRadius(), 3);
    ctrl.psfSigma = 1.0;  // floor(7.5) = 7 -> K = 7
    EXPECT_EQ(ctrl.kernelHalfWidth(), 3);
    ctrl.psfSigma = 0.2;  // floor(1.9) = 1 -> K = 1
    EXPECT_EQ(ctrl.kernelHalfWidth(), 0);
    EXPECT_EQ(gaussianKernel1D(0.2, 7.0), std::vector<double>{1.0});
}

TEST(Detect, ControlValidation) {
    EXPECT_NO_THROW(DetectControl{}.validate());
    auto bad = [](auto mutate) {
        DetectControl c;
        mutate(c);
        EXPECT_THROW(c.validate(), InvalidParameter);
    };
    bad([](DetectControl& c) { c.psfSigma = 0.0; });
    bad([](DetectControl& c) { c.psfSigma = -1.0; });
    bad([](DetectControl& c) { c.psfSigma = std::nan(""); });
    bad([](DetectControl& c) { c.thresholdValue = 0.0; });
    bad([](DetectControl& c) { c.nSigmaToGrow = -1.0; });
    bad([](DetectControl& c) { c.minPixels = -1; });
    bad([](DetectControl& c) { c.nSigmaForKernel = 0.0; });
    EXPECT_THROW(gaussianKernel1D(0.0, 7.0), InvalidParameter);
    ImageF a(Box{0, 0, 10, 10});
    ImageF b(Box{0, 0, 10, 11});
    EXPECT_THROW(smoothImage(a, b, 1.0, 7.0), InvalidParameter);
}

TEST(Detect, SmoothingConstantImageGivesConstant) {
    const Box box{-7, 13, 50, 40};
    const ImageF img(box, 3.25F);
    const ImageF var(box, 2.0F);
    const Smoothed s = smoothImage(img, var, 2.0, 7.0);
    EXPECT_EQ(s.valid, box.grown(-7));
    double g2 = 0.0;
    for (double v : gaussianKernel1D(2.0, 7.0)) {
        g2 += v * v;
    }
    const double expectedVar = 2.0 * g2 * g2;
    for (int y = box.y0; y < box.y1(); ++y) {
        for (int x = box.x0; x < box.x1(); ++x) {
            if (s.valid.contains(x, y)) {
                ASSERT_NEAR(s.image(x, y), 3.25F, 1e-6F);
                ASSERT_NEAR(s.variance(x, y), expectedVar, 1e-7);
            } else {
                ASSERT_TRUE(std::isnan(s.image(x, y)));
                ASSERT_TRUE(std::isnan(s.variance(x, y)));
            }
        }
    }
    // A box smaller than the kernel has no valid pixels.
    const Smoothed tiny =
        smoothImage(ImageF(Box{0, 0, 14, 30}, 1.0F), ImageF(Box{0, 0, 14, 30}, 1.0F), 2.0, 7.0);
    EXPECT_TRUE(tiny.valid.empty());
    EXPECT_TRUE(thresholdSpans(tiny, 2.0, Polarity::Both).empty());
}

TEST(Detect, SmoothingMatchesDirect2DConvolution) {
    const Box box{3, -4, 37, 29};
    ImageF img(box);
    ImageF var(box);
    std::mt19937 rng(99);
    std::normal_distribution<float> n(0.0F, 5.0F);
    std::uniform_real_distribution<float> u(0.5F, 3.0F);
    for (float& v : img.data()) {
        v = n(rng);
    }
    for (float& v : var.data()) {
        v = u(rng);
    }
    const double sigma = 1.7;
    const std::vector<double> g = gaussianKernel1D(sigma, 7.0);
    const int r = static_cast<int>(g.size() / 2);
    const Smoothed s = smoothImage(img, var, sigma, 7.0);
    for (int y = s.valid.y0; y < s.valid.y1(); ++y) {
        for (int x = s.valid.x0; x < s.valid.x1(); ++x) {
            double si = 0.0;
            double sv = 0.0;
            for (int dy = -r; dy <= r; ++dy) {
                for (int dx = -r; dx <= r; ++dx) {
                    const double k =
                        g[static_cast<std::size_t>(dy + r)] * g[static_cast<std::size_t>(dx + r)];
                    si += k * img(x + dx, y + dy);
                    sv += k * k * var(x + dx, y + dy);
                }
            }
            ASSERT_NEAR(s.image(x, y), si, 1e-5);
            ASSERT_NEAR(s.variance(x, y), sv, 1e-7);
        }
    }
}

/// Zero image with constant variance 1 and a delta of amplitude `amp` at (cx, cy).
struct PointSource {
    ImageF image;
    ImageF variance;
};
PointSource pointSource(const Box& box, int cx, int cy, float amp) {
    PointSource p{ImageF(box, 0.0F), ImageF(box, 1.0F)};
    p.image(cx, cy) = amp;
    return p;
}

TEST(Detect, PointSourceDetectedWithExpectedGrowth) {
    const Box box{0, 0, 64, 64};
    const PointSource p = pointSource(box, 30, 32, 100.0F);
    DetectControl ctrl;  // sigma 2, r 7, grow 4
    // Expected threshold set from the separable taps: amp*g(dx)*g(dy) >= 2*sqrt(sum(g^2)^2) = 2*sum(g^2).
    const std::vector<double> g = gaussianKernel1D(2.0, 7.0);
    double g2 = 0.0;
    for (double v : g) {
        g2 += v * v;
    }
    std::vector<Span> above;
    for (int dy = -7; dy <= 7; ++dy) {
        for (int dx = -7; dx <= 7; ++dx) {
            const double ratio = 100.0 * g[static_cast<std::size_t>(dx + 7)] *
                                 g[static_cast<std::size_t>(dy + 7)] / (2.0 * g2);
            ASSERT_GT(std::abs(ratio - 1.0), 1e-3) << "test pixel too close to the threshold";
            if (ratio >= 1.0) {
                above.push_back(Span{32 + dy, 30 + dx, 30 + dx});
            }
        }
    }
    const SpanSet expectedAbove = SpanSet::fromSpans(above);
    ASSERT_GE(expectedAbove.area(), 4);
    const Smoothed s = smoothImage(p.image, p.variance, 2.0, 7.0);
    EXPECT_EQ(thresholdSpans(s, 2.0, Polarity::Positive), expectedAbove);
    EXPECT_TRUE(thresholdSpans(s, 2.0, Polarity::Negative).empty());

    const std::vector<SpanSet> fps = detectFootprints(p.image, p.variance, ctrl);
    ASSERT_EQ(fps.size(), 1U);
    EXPECT_EQ(fps[0], bruteDilate(expectedAbove, 4, box));
    const Box tb = expectedAbove.bbox();
    EXPECT_EQ(fps[0].bbox(), tb.grown(4));
    EXPECT_TRUE(fps[0].contains(30, 32));
    // The source centre's row extends exactly 4 beyond the thresholded run.
    EXPECT_TRUE(fps[0].contains(tb.x1() - 1 + 4, 32));
    EXPECT_FALSE(fps[0].contains(tb.x1() - 1 + 5, 32));
}

TEST(Detect, GrowthIsClippedToFullBox) {
    // A source near the edge: thresholded pixels lie in the valid box, growth reaches into the border.
    const Box box{0, 0, 40, 40};
    const PointSource p = pointSource(box, 8, 20, 100.0F);
    const std::vector<SpanSet> fps = detectFootprints(p.image, p.variance, DetectControl{});
    ASSERT_EQ(fps.size(), 1U);
    EXPECT_TRUE(box.contains(fps[0].bbox()));
    EXPECT_LT(fps[0].bbox().x0, 7);  // reaches outside the valid box (x >= 7)
}

TEST(Detect, NegativeBlobNeedsNegativePolarity) {
    const Box box{0, 0, 64, 64};
    const PointSource p = pointSource(box, 30, 30, -100.0F);
    DetectControl ctrl;
    ctrl.polarity = Polarity::Both;
    const auto both = detectFootprints(p.image, p.variance, ctrl);
    ASSERT_EQ(both.size(), 1U);
    EXPECT_TRUE(both[0].contains(30, 30));
    ctrl.polarity = Polarity::Negative;
    EXPECT_EQ(detectFootprints(p.image, p.variance, ctrl), both);
    ctrl.polarity = Polarity::Positive;
    EXPECT_TRUE(detectFootprints(p.image, p.variance, ctrl).empty());
}

TEST(Detect, PositiveAndNegativeFootprintsThatTouchMerge) {
    // A dipole: grown positive and negative footprints overlap and become one footprint.
    const Box box{0, 0, 80, 64};
    ImageF img(box, 0.0F);
    const ImageF var(box, 1.0F);
    img(35, 30) = 100.0F;
    img(43, 30) = -100.0F;
    DetectControl ctrl;
    const auto fps = detectFootprints(img, var, ctrl);
    ASSERT_EQ(fps.size(), 1U);
    EXPECT_TRUE(fps[0].contains(35, 30));
    EXPECT_TRUE(fps[0].contains(43, 30));
    // Far apart: two footprints, ordered by first span.
    ImageF img2(box, 0.0F);
    img2(60, 20) = 100.0F;
    img2(20, 45) = -100.0F;
    const auto two = detectFootprints(img2, var, ctrl);
    ASSERT_EQ(two.size(), 2U);
    EXPECT_TRUE(two[0].contains(60, 20));
    EXPECT_TRUE(two[1].contains(20, 45));
}

TEST(Detect, SmallBlobsBelowMinPixelsAreDropped) {
    // sigma 0.3: K = 3 with side taps ~0.004, so the thresholded set is exactly the bright pixels.
    const Box box{0, 0, 30, 30};
    ImageF img(box, 0.0F);
    const ImageF var(box, 1.0F);
    img(10, 10) = 10.0F;
    img(11, 10) = 10.0F;
    img(11, 11) = 10.0F;  // 3-pixel L
    img(20, 20) = 10.0F;
    img(21, 21) = 10.0F;
    img(22, 22) = 10.0F;
    img(23, 23) = 10.0F;  // 4-pixel diagonal (8-connected)
    DetectControl ctrl;
    ctrl.psfSigma = 0.3;
    ASSERT_EQ(ctrl.kernelHalfWidth(), 1);
    ASSERT_EQ(ctrl.growRadius(), 1);
    const Smoothed s = smoothImage(img, var, ctrl.psfSigma, ctrl.nSigmaForKernel);
    ASSERT_EQ(thresholdSpans(s, 2.0, Polarity::Positive).area(), 7);
    const auto fps = detectFootprints(img, var, ctrl);
    ASSERT_EQ(fps.size(), 1U);
    EXPECT_TRUE(fps[0].contains(20, 20));
    EXPECT_FALSE(fps[0].contains(10, 10));
    ctrl.minPixels = 3;
    EXPECT_EQ(detectFootprints(img, var, ctrl).size(), 2U);
}

TEST(Detect, NaNSuppressesDetectionWithinKernelRadius) {
    const Box box{0, 0, 64, 64};
    PointSource p = pointSource(box, 30, 30, 100.0F);
    ASSERT_EQ(detectFootprints(p.image, p.variance, DetectControl{}).size(), 1U);
    p.image(33, 36) = kNaN;
    const Smoothed s = smoothImage(p.image, p.variance, 2.0, 7.0);
    for (int y = s.valid.y0; y < s.valid.y1(); ++y) {
        for (int x = s.valid.x0; x < s.valid.x1(); ++x) {
            const bool near = std::abs(x - 33) <= 7 && std::abs(y - 36) <= 7;
            ASSERT_EQ(std::isnan(s.image(x, y)), near) << x << "," << y;
        }
    }
    const SpanSet above = thresholdSpans(s, 2.0, Polarity::Both);
    for (const Span& sp : above.spans()) {
        for (int x = sp.x0; x <= sp.x1; ++x) {
            EXPECT_FALSE(std::abs(x - 33) <= 7 && std::abs(sp.y - 36) <= 7);
        }
    }
    // NaN on the source kills the whole detection.
    p.image(30, 30) = kNaN;
    EXPECT_TRUE(detectFootprints(p.image, p.variance, DetectControl{}).empty());
    // Infinite variance (NO_DATA) under the kernel also prevents detection.
    PointSource q = pointSource(box, 30, 30, 100.0F);
    q.variance(30, 31) = std::numeric_limits<float>::infinity();
    EXPECT_TRUE(detectFootprints(q.image, q.variance, DetectControl{}).empty());
}

/// Random difference-like image: noise plus Gaussian blobs of both signs and a NaN hole.
struct Scene {
    ImageF image;
    ImageF variance;
};
Scene randomScene(const Box& box, unsigned seed) {
    Scene sc{ImageF(box), ImageF(box, 1.0F)};
    std::mt19937 rng(seed);
    std::normal_distribution<float> noise(0.0F, 1.0F);
    for (float& v : sc.image.data()) {
        v = noise(rng);
    }
    std::uniform_int_distribution<int> xd(box.x0, box.x1() - 1);
    std::uniform_int_distribution<int> yd(box.y0, box.y1() - 1);
    std::uniform_real_distribution<float> ad(-40.0F, 40.0F);
    std::uniform_real_distribution<float> sd(0.7F, 3.0F);
    for (int k = 0; k < 40; ++k) {
        const int cx = xd(rng);
        const int cy = yd(rng);
        const float a = ad(rng);
        const float s = sd(rng);
        for (int y = std::max(box.y0, cy - 12); y < std::min(box.y1(), cy + 13); ++y) {
            for (int x = std::max(box.x0, cx - 12); x < std::min(box.x1(), cx + 13); ++x) {
                const float d2 = static_cast<float>((x - cx) * (x - cx) + (y - cy) * (y - cy));
                sc.image(x, y) += a * std::exp(-d2 / (2.0F * s * s));
            }
        }
    }
    // A streak, and a NaN hole with infinite variance.
    for (int x = box.x0 + 10; x < std::min(box.x1(), box.x0 + 110); ++x) {
        sc.image(x, box.y0 + std::min(57, box.height - 1)) += 6.0F;
    }
    const int hy = box.y0 + box.height * 2 / 3;
    const int hx = box.x0 + box.width * 3 / 5;
    for (int y = hy; y < hy + 6; ++y) {
        for (int x = hx; x < hx + 7; ++x) {
            sc.image(x, y) = kNaN;
            sc.variance(x, y) = std::numeric_limits<float>::infinity();
        }
    }
    return sc;
}

TEST(Detect, SmoothingIsBitwiseIndependentOfTheInputBox) {
    // The value at a pixel depends only on the input pixels under its kernel: smoothing a sub-box
    // reproduces the whole-image values exactly (not just within a tolerance) on its valid box.
    const Box full{0, 0, 90, 70};
    const Scene sc = randomScene(full, 11);
    const Smoothed whole = smoothImage(sc.image, sc.variance, 2.0, 7.0);
    for (const Box& sub : {Box{0, 0, 31, 29}, Box{13, 17, 40, 33}, Box{50, 41, 40, 29}}) {
        const Smoothed part = smoothImage(subImage(sc.image, sub), subImage(sc.variance, sub), 2.0, 7.0);
        ASSERT_EQ(part.valid, sub.grown(-7));
        for (int y = part.valid.y0; y < part.valid.y1(); ++y) {
            for (int x = part.valid.x0; x < part.valid.x1(); ++x) {
                const float a = part.image(x, y);
                const float b = whole.image(x, y);
                ASSERT_TRUE((std::isnan(a) && std::isnan(b)) || a == b) << x << "," << y;
                const float va = part.variance(x, y);
                const float vb = whole.variance(x, y);
                ASSERT_TRUE((std::isnan(va) && std::isnan(vb)) || va == vb) << x << "," << y;
            }
        }
    }
}

TEST(Detect, SubBoxWithHaloGivesSameFootprintsInTile) {
    // Tiling property: detecting on tile + halo and keeping the tile gives the whole-image result.
    // The halo must be r + grow + (minPixels - 1): a component of >= minPixels pixels that reaches
    // within grow of the tile has a connected subset of minPixels pixels within minPixels-1 of it.
    const Box full{-20, 5, 150, 120};
    const Scene sc = randomScene(full, 2024);
    DetectControl ctrl;
    const int halo = ctrl.kernelHalfWidth() + ctrl.growRadius() + (ctrl.minPixels - 1);
    const SpanSet whole = unionOf(detectFootprints(sc.image, sc.variance, ctrl));
    ASSERT_GT(whole.area(), 1000);
    for (int ty = full.y0; ty < full.y1(); ty += 37) {
        for (int tx = full.x0; tx < full.x1(); tx += 41) {
            const Box tile = Box{tx, ty, 41, 37}.intersect(full);
            const Box sub = tile.grown(halo).intersect(full);
            const SpanSet local =
                unionOf(detectFootprints(subImage(sc.image, sub), subImage(sc.variance, sub), ctrl));
            EXPECT_EQ(local.clippedTo(tile), whole.clippedTo(tile)) << "tile " << tile.str();
        }
    }
}

TEST(Detect, HaloOfKernelPlusGrowAloneIsNotEnoughWithMinPixels) {
    // Counter-example documenting why the tiling halo needs the extra minPixels-1: a 6-pixel
    // horizontal run whose only pixel inside the sub-box's valid region lies within grow of the tile.
    // sigma 0.3: r = 1, grow = 1, and the thresholded set is exactly the bright pixels.
    const Box full{0, 0, 64, 64};
    ImageF img(full, 0.0F);
    const ImageF var(full, 1.0F);
    for (int x = 40; x <= 45; ++x) {
        img(x, 30) = 10.0F;
    }
    DetectControl ctrl;
    ctrl.psfSigma = 0.3;
    const Box tile{20, 20, 20, 20};  // columns 20..39
    const SpanSet whole = unionOf(detectFootprints(img, var, ctrl));
    ASSERT_TRUE(whole.contains(39, 30));  // grown into the tile
    const int r = ctrl.kernelHalfWidth();
    const int grow = ctrl.growRadius();
    const Box small = tile.grown(r + grow);  // valid columns 19..40: one pixel of the run
    const SpanSet s1 = unionOf(detectFootprints(subImage(img, small), subImage(var, small), ctrl));
    EXPECT_NE(s1.clippedTo(tile), whole.clippedTo(tile));
    const Box enough = tile.grown(r + grow + ctrl.minPixels - 1);
    const SpanSet s2 = unionOf(detectFootprints(subImage(img, enough), subImage(var, enough), ctrl));
    EXPECT_EQ(s2.clippedTo(tile), whole.clippedTo(tile));
}

TEST(Detect, FootprintsOrderedByFirstSpanAndDisjoint) {
    const Scene sc = randomScene(Box{0, 0, 150, 120}, 7);
    const auto fps = detectFootprints(sc.image, sc.variance, DetectControl{});
    ASSERT_GE(fps.size(), 2U);
    for (std::size_t k = 1; k < fps.size(); ++k) {
        const Span& a = fps[k - 1].spans().front();
        const Span& b = fps[k].spans().front();
        EXPECT_TRUE(a.y < b.y || (a.y == b.y && a.x0 < b.x0));
    }
    for (std::size_t i = 0; i < fps.size(); ++i) {
        for (std::size_t j = i + 1; j < fps.size(); ++j) {
            EXPECT_EQ(fps[i].intersectArea(fps[j]), 0);
            // Distinct footprints are not 8-adjacent either.
            EXPECT_EQ(grow8(fps[i]).intersectArea(fps[j]), 0);
        }
    }
}

// ---- doSmooth = false (CompareWarp: detection on warp - template, spec §10 step 4) ----------

TEST(Detect, NoSmoothingHasNoKernelAndIgnoresKernelWidth) {
    DetectControl ctrl;
    ctrl.doSmooth = false;
    EXPECT_EQ(ctrl.kernelHalfWidth(), 0);
    ctrl.nSigmaForKernel = -1.0;  // unused without smoothing: accepted
    EXPECT_NO_THROW(ctrl.validate());
    ctrl.doSmooth = true;
    EXPECT_THROW(ctrl.validate(), InvalidParameter);
    ctrl.nSigmaForKernel = 7.0;
    EXPECT_EQ(ctrl.kernelHalfWidth(), 7);  // σ 2: K = 2*floor(14/2)+1 = 15
}

TEST(Detect, NoSmoothingThresholdsEachPixelAndGrowsByTheDisk) {
    // CompareWarp's detect config: threshold 5 (pixel_stdev), both polarities, minPixels 4,
    // nSigmaToGrow 0.4; with psfSigma 2.0 the growth is int(0.4*2 + 0.5) = 1 (the 4-neighbour cross).
    // Variance 4 everywhere, so a pixel passes when |value| >= 5*sqrt(4) = 10 (inclusive).
    const Box box{0, 0, 48, 40};
    ImageF img(box, 0.0F);
    ImageF var(box, 4.0F);
    // A: positive 2x2 at x 5..6, y 5..6 with one pixel exactly at the threshold (10 passes: >=).
    img(5, 5) = 12.0F;
    img(6, 5) = 12.0F;
    img(5, 6) = 12.0F;
    img(6, 6) = 10.0F;
    // B: negative 2x2 at x 30..31, y 8..9.
    for (int y = 8; y <= 9; ++y) {
        for (int x = 30; x <= 31; ++x) {
            img(x, y) = -11.0F;
        }
    }
    // C: 3 bright pixels (< minPixels 4): dropped. D: 4 pixels just below threshold: nothing.
    img(20, 30) = 50.0F;
    img(21, 30) = 50.0F;
    img(22, 30) = 50.0F;
    for (int x = 10; x < 14; ++x) {
        img(x, 20) = 9.99F;
    }
    // E: positive 2x2 at x 10..11, y 33..34 and negative 2x2 at x 14..15: the columns 12, 13
    // between them are reached by the growth of each (12 by E+, 13 by E-): they touch after growth
    // and must merge into one footprint (polarity merge, spec §6.1.8).
    for (int y = 33; y <= 34; ++y) {
        img(10, y) = 20.0F;
        img(11, y) = 20.0F;
        img(14, y) = -20.0F;
        img(15, y) = -20.0F;
    }
    // F: a NaN pixel with NaN variance next to nothing: never passes.
    img(40, 20) = kNaN;
    var(40, 20) = kNaN;
    DetectControl ctrl;
    ctrl.doSmooth = false;
    ctrl.psfSigma = 2.0;
    ctrl.thresholdValue = 5.0;
    ctrl.nSigmaToGrow = 0.4;
    ctrl.minPixels = 4;
    ctrl.polarity = Polarity::Both;
    ASSERT_EQ(ctrl.growRadius(), 1);

    auto square = [](int x0, int y0) {
        return SpanSet::fromSpans({Span{y0, x0, x0 + 1}, Span{y0 + 1, x0, x0 + 1}});
    };
    const SpanSet a = bruteDilate(square(5, 5), 1, box);
    const SpanSet b = bruteDilate(square(30, 8), 1, box);
    const SpanSet e = bruteDilate(square(10, 33), 1, box).unite(bruteDilate(square(14, 33), 1, box));
    ASSERT_EQ(connectedComponents8(e).size(), 1U);  // the derivation above: they touch
    const std::vector<SpanSet> fps = detectFootprints(img, var, ctrl);
    ASSERT_EQ(fps.size(), 3U);
    EXPECT_EQ(fps[0], a);  // ordered by first span: y 4, y 7, y 32
    EXPECT_EQ(fps[1], b);
    EXPECT_EQ(fps[2], e);
    EXPECT_EQ(a.area(), 12);  // 2x2 plus 2 on each side

    // Positive only: B and the negative half of E disappear.
    ctrl.polarity = Polarity::Positive;
    const std::vector<SpanSet> pos = detectFootprints(img, var, ctrl);
    ASSERT_EQ(pos.size(), 2U);
    EXPECT_EQ(pos[0], a);
    EXPECT_EQ(pos[1], bruteDilate(square(10, 33), 1, box));

    // minPixels 3 keeps C (3 pixels in a row, grown by the cross; first span y 29, before E).
    ctrl.polarity = Polarity::Both;
    ctrl.minPixels = 3;
    const SpanSet c = bruteDilate(SpanSet::fromSpans({Span{30, 20, 22}}), 1, box);
    const std::vector<SpanSet> withC = detectFootprints(img, var, ctrl);
    ASSERT_EQ(withC.size(), 4U);
    EXPECT_EQ(withC[2], c);
    EXPECT_EQ(withC[3], e);

    // No growth with nSigmaToGrow 0: A is exactly its 4 pixels.
    ctrl.minPixels = 4;
    ctrl.nSigmaToGrow = 0.0;
    const std::vector<SpanSet> bare = detectFootprints(img, var, ctrl);
    ASSERT_EQ(bare.size(), 4U);  // E's halves no longer touch
    EXPECT_EQ(bare[0], square(5, 5));
}

TEST(Detect, NoSmoothingDetectsUpToTheBoxEdge) {
    // Without a kernel there is no invalid border: a 2x2 source in the corner is found, and with
    // smoothing (r 7) it is not (its pixels lie outside the valid box).
    const Box box{3, 4, 30, 30};
    ImageF img(box, 0.0F);
    ImageF var(box, 1.0F);
    img(3, 4) = img(4, 4) = img(3, 5) = img(4, 5) = 100.0F;
    DetectControl ctrl;
    ctrl.doSmooth = false;
    ctrl.nSigmaToGrow = 0.0;
    const std::vector<SpanSet> fps = detectFootprints(img, var, ctrl);
    ASSERT_EQ(fps.size(), 1U);
    EXPECT_EQ(fps[0], SpanSet::fromSpans({Span{4, 3, 4}, Span{5, 3, 4}}));
    // Smoothed (σ 2, r 7, threshold 2): the nearest valid pixel (10, 11) is 6-7 px from the source;
    // its smoothed value 100*(g(6)+g(7))^2 ≈ 7e-4 is far below 2*sqrt(Σk²) = 2*Σg² ≈ 0.28.
    ctrl.doSmooth = true;
    EXPECT_TRUE(detectFootprints(img, var, ctrl).empty());
}

// detectTemplate (CompareWarp, spec §10 step 1): threshold = 5 x STDEVCLIP of the smoothed image,
// positive polarity, Manhattan growth; the same footprints (shifted) wherever the box lies.
TEST(Detect, TemplateThresholdIsFiveClippedStdevsOfTheSmoothedImage) {
    auto make = [](int x0, int y0) {
        ImageF im(Box{x0, y0, 96, 80});
        std::mt19937 rng(11);
        std::normal_distribution<float> noise(0.0F, 1.0F);
        for (int y = 0; y < 80; ++y) {
            for (int x = 0; x < 96; ++x) {
                const double r2 = (x - 40.0) * (x - 40.0) + (y - 30.0) * (y - 30.0);
                im(x0 + x, y0 + y) = noise(rng) + static_cast<float>(200.0 * std::exp(-r2 / 8.0));
            }
        }
        return im;
    };
    const ImageF a = make(0, 0);
    const TemplateDetection ta = detectTemplate(a, 2.0, 7.0, 5.0, 2.4);
    // Smoothed unit noise has stdev 1/(2 sqrt(pi) sigma) = 0.141 for sigma 2; the clip keeps ~99 %.
    EXPECT_NEAR(ta.stdev, 0.141, 0.02);
    EXPECT_DOUBLE_EQ(ta.threshold, 5.0 * ta.stdev);
    EXPECT_TRUE(ta.footprints.contains(40, 30));
    EXPECT_FALSE(ta.footprints.contains(80, 70));
    // Another box origin: the same threshold and the same footprints, shifted.
    const ImageF b = make(1000, 2000);
    const TemplateDetection tb = detectTemplate(b, 2.0, 7.0, 5.0, 2.4);
    EXPECT_EQ(tb.threshold, ta.threshold);
    std::vector<Span> shifted;
    for (const Span& sp : ta.footprints.spans()) {
        shifted.push_back(Span{sp.y + 2000, sp.x0 + 1000, sp.x1 + 1000});
    }
    EXPECT_EQ(tb.footprints, SpanSet::fromSpans(shifted));
    EXPECT_THROW((void)detectTemplate(a, 0.0, 7.0, 5.0, 2.4), InvalidParameter);
}

}  // namespace
}  // namespace safeclip::kernel
