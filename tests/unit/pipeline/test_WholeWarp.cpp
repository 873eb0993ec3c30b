// Statistics over the whole warp (issue 12 item 6). Upstream coadds a patch from warps of its own
// box; when a warp is larger than the patch box, its weight (prepareInputs: 1/MEANCLIP of the whole
// variance plane), the all-NaN test (`numpy.isnan(tempExp.image.array).all()`) and the DETECTED
// components of the big-footprint rule (spec §6.2: "computed over the whole warp") are properties of
// the warp, not of the box coadded from it. So the same warps coadded for a patch box inside them
// and for their full box must give the same pixels inside the patch box.
//
// Each warp below is built so that a patch-box-only statistic would differ from the whole-warp one:
//  - warp 0 has a bright transient inside the patch whose DETECTED disk continues as a band that
//    leaves the patch, turns outside it and comes back in 36 px lower: inside the patch box these are
//    two DETECTED components, over the whole warp one. The transient is clipped in warp 0, and the
//    big-footprint rule then clips the whole component, so the far band is CLIPPED too;
//  - warp 1's VARIANCE plane is 4 outside the patch box (1 inside): its whole-warp weight is lower;
//  - warp 2's IMAGE is NaN everywhere inside the patch box: it is not an all-NaN warp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "PipelineSettings.h"
#include "TempDir.h"
#include "TinyWarps.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/pipeline/Driver.h"

using namespace safeclip;
using kernel::Box;
using safeclip::test::TempDir;

namespace {

const Box kWarpBox{0, 0, 96, 96};
const Box kPatch{16, 16, 64, 64};  // x, y in [16, 80)

void fill(kernel::MaskedImage& mi, const Box& b, const std::function<void(int, int)>& f) {
    const Box c = b.intersect(mi.image.box());
    for (int y = c.y0; y < c.y1(); ++y) {
        for (int x = c.x0; x < c.x1(); ++x) {
            f(x, y);
        }
    }
}

std::vector<pipeline::WarpInput> writeWarps(const TempDir& dir) {
    const kernel::MaskPixel det = kernel::MaskDict::canonical().bitMask("DETECTED");
    std::vector<pipeline::WarpInput> inputs;
    for (int i = 0; i < 5; ++i) {
        test::TinyWarp w;
        w.box = kWarpBox;
        w.visit = 100 + i;
        w.seed = 700U + static_cast<unsigned>(i);
        w.sx = 36;
        w.sy = 36;
        w.starDetR2 = 64;
        if (i == 0) {
            w.transientFlux = 20000;
            w.tx = 60;
            w.ty = 60;
            w.transientDetR2 = 100;
            w.edit = [det](kernel::MaskedImage& mi) {
                auto setDet = [&](int x, int y) { mi.mask(x, y) |= det; };
                fill(mi, Box{60, 58, 32, 5}, setDet);  // out of the patch to the right (x 60..91)
                fill(mi, Box{87, 22, 5, 41}, setDet);  // down, outside the patch (x 87..91)
                fill(mi, Box{66, 22, 26, 5}, setDet);  // back in at y 22..26 (x 66..91)
            };
        } else if (i == 1) {
            w.edit = [](kernel::MaskedImage& mi) {
                fill(mi, kWarpBox, [&](int x, int y) {
                    if (!kPatch.contains(x, y)) {
                        mi.variance(x, y) = 4.0F;
                    }
                });
            };
        } else if (i == 2) {
            w.edit = [](kernel::MaskedImage& mi) {
                fill(mi, kPatch,
                     [&](int x, int y) { mi.image(x, y) = std::numeric_limits<float>::quiet_NaN(); });
            };
        }
        const std::string path = dir.file("w" + std::to_string(i) + ".fits");
        test::writeTinyWarp(path, w);
        inputs.push_back({-1, path});
    }
    return inputs;
}

struct Coadd {
    kernel::MaskedImage mi;
    kernel::ImageU16 nImage;
    kernel::MaskDict dict = kernel::MaskDict::canonical();
};

Coadd readCoadd(const std::string& path) {
    Coadd c;
    io::WarpReader r(path);
    r.conformTo(c.dict);
    r.read(kPatch, c.mi);
    c.nImage = io::readNImage(path);
    return c;
}

}  // namespace

TEST(WholeWarp, PatchBoxInsideLargerWarpsGivesTheFullBoxPixels) {
    TempDir dir;
    const auto inputs = writeWarps(dir);
    const auto s = test::defaultPatchSettings();
    const auto full = pipeline::runPatch("full", kWarpBox, inputs, s, dir.file("full.fits"), nullptr, {});
    const auto part = pipeline::runPatch("part", kPatch, inputs, s, dir.file("part.fits"), nullptr, {});
    // Warp 2 is NaN only inside the patch box: used in both (not an all-NaN warp).
    EXPECT_EQ(full.nUsed, 5);
    EXPECT_EQ(part.nUsed, 5);
    // The transient is clipped in warp 0, and with it the whole DETECTED component.
    EXPECT_GE(part.nClippedFootprints, 1);
    EXPECT_GE(part.nBigFootprints, 1);
    const Coadd a = readCoadd(dir.file("full.fits"));
    const Coadd b = readCoadd(dir.file("part.fits"));
    const kernel::MaskPixel clipped = b.dict.bitMask("CLIPPED");
    ASSERT_NE(clipped, 0);
    // The far band (y 22..26 inside the patch) is one component with the transient's disk only
    // through pixels outside the patch box: CLIPPED there in the patch-box coadd too.
    EXPECT_NE(b.mi.mask(72, 24) & clipped, 0);
    EXPECT_NE(a.mi.mask(72, 24) & clipped, 0);
    std::int64_t differ = 0;
    for (int y = kPatch.y0; y < kPatch.y1(); ++y) {
        for (int x = kPatch.x0; x < kPatch.x1(); ++x) {
            const bool same = std::memcmp(&a.mi.image(x, y), &b.mi.image(x, y), 4) == 0 &&
                              std::memcmp(&a.mi.variance(x, y), &b.mi.variance(x, y), 4) == 0 &&
                              a.mi.mask(x, y) == b.mi.mask(x, y) && a.nImage(x, y) == b.nImage(x, y);
            differ += same ? 0 : 1;
        }
    }
    EXPECT_EQ(differ, 0) << "pixels of the patch box that differ between the two coadds";
}
