// Bad warps (issue 12 item 4). Upstream's AssembleCoaddTask.prepareInputs (pipe_tasks
// assembleCoadd.py) skips a warp whose image is all NaN (`if numpy.isnan(tempExp.image.array).all():
// continue`) and one whose weight 1/MEANCLIP(variance) is not finite ("Non-finite weight for %s:
// skipping"), and still makes the coadd. So safeclip skips exactly those by default, with the reason
// in the warp's status; every other bad warp (here a negative variance, whose weight upstream would
// accept as a finite negative number) follows input.on_bad_warp, and `strict` fails on all of them.
#include <gtest/gtest.h>

#include <filesystem>

#include "PipelineSettings.h"
#include "TempDir.h"
#include "TinyWarps.h"
#include "safeclip/io/FitsFile.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/pipeline/Driver.h"
#include "safeclip/pipeline/Stages.h"

using namespace safeclip;
using safeclip::test::TempDir;

namespace {

pipeline::PatchSettings settings(const std::string& mode) {
    return test::defaultPatchSettings(mode);
}

/// Three good warps and one bad one of the given kind ("nan", "zerovar", "negvar").
std::vector<pipeline::WarpInput> warps(const TempDir& dir, const std::string& bad) {
    std::vector<pipeline::WarpInput> inputs;
    for (int i = 0; i < 4; ++i) {
        test::TinyWarp w;
        w.visit = 10 + i;
        w.seed = 200U + static_cast<unsigned>(i);
        if (i == 3) {
            w.nanImage = bad == "nan";
            if (bad == "zerovar") {
                w.varianceWritten = 0.0F;
            } else if (bad == "negvar") {
                w.varianceWritten = -1.0F;
            }
        }
        const std::string path = dir.file(bad + std::to_string(i) + ".fits");
        test::writeTinyWarp(path, w);
        inputs.push_back({-1, path});
    }
    return inputs;
}

}  // namespace

TEST(BadWarps, UpstreamSkipsAreSkippedByDefaultInBothModes) {
    for (const std::string mode : {"safeclip", "mean"}) {
        for (const std::string bad : {"nan", "zerovar"}) {
            SCOPED_TRACE(mode + " " + bad);
            TempDir dir;
            const auto s = settings(mode);  // input.on_bad_warp = fail (the default)
            const auto r =
                pipeline::runPatch("p", kernel::Box{}, warps(dir, bad), s, dir.file("out.fits"), nullptr, {});
            EXPECT_EQ(r.nUsed, 3);
            ASSERT_EQ(r.skippedWarps.size(), 1U);
            const std::string why = bad == "nan" ? "every image pixel is NaN" : "non-finite weight";
            EXPECT_NE(r.skippedWarps[0].find(bad + "3.fits: skipped: " + why), std::string::npos)
                << r.skippedWarps[0];
        }
    }
}

TEST(BadWarps, TheRestFollowsOnBadWarpAndStrictFailsOnAll) {
    TempDir dir;
    auto s = settings("safeclip");
    // A negative variance gives a finite negative weight: not an upstream skip, so `fail` stops.
    try {
        (void)pipeline::runPatch("p", kernel::Box{}, warps(dir, "negvar"), s, dir.file("a.fits"), nullptr,
                                 {});
        ADD_FAILURE() << "negative variance accepted under input.on_bad_warp = fail";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ExitCode::Input);
        EXPECT_NE(std::string(e.what()).find("no positive finite weight"), std::string::npos) << e.what();
    }
    s.skipBadWarps = true;  // input.on_bad_warp = skip
    const auto r =
        pipeline::runPatch("p", kernel::Box{}, warps(dir, "negvar"), s, dir.file("b.fits"), nullptr, {});
    EXPECT_EQ(r.nUsed, 3);
    // input.on_bad_warp = strict: the upstream skips stop the run too.
    s.skipBadWarps = false;
    s.skipEmptyWarps = false;
    for (const std::string bad : {"nan", "zerovar"}) {
        EXPECT_THROW((void)pipeline::runPatch("p", kernel::Box{}, warps(dir, bad), s, dir.file(bad + ".fits"),
                                              nullptr, {}),
                     InputError)
            << bad;
    }
}

TEST(BadWarps, APatchWhoseWarpsAreAllSkippedIsAnInputError) {
    // Every warp all NaN (or all NaN but one with zero variance): upstream would have nothing to
    // coadd; here a clear input error in both modes, not a crash in the stages after the weights.
    for (const std::string mode : {"safeclip", "mean"}) {
        SCOPED_TRACE(mode);
        TempDir dir;
        std::vector<pipeline::WarpInput> inputs;
        for (int i = 0; i < 3; ++i) {
            test::TinyWarp w;
            w.visit = 50 + i;
            w.nanImage = i != 2;
            if (i == 2) {
                w.varianceWritten = 0.0F;
            }
            const std::string path = dir.file("bad" + std::to_string(i) + ".fits");
            test::writeTinyWarp(path, w);
            inputs.push_back({-1, path});
        }
        try {
            (void)pipeline::runPatch("p", kernel::Box{}, inputs, settings(mode), dir.file("out.fits"),
                                     nullptr, {});
            ADD_FAILURE() << "no error";
        } catch (const Error& e) {
            EXPECT_EQ(e.code(), ExitCode::Input);
            const std::string what = e.what();
            EXPECT_NE(what.find("patch p: no usable warps (all 3 skipped: "), std::string::npos) << what;
            EXPECT_NE(what.find("bad2.fits: skipped: non-finite weight"), std::string::npos) << what;
        }
        EXPECT_FALSE(std::filesystem::exists(dir.file("out.fits")));
    }
}

TEST(BadWarps, PixelValidationSkipsTheSameWarpsUpstreamSkips) {
    // input.validate_pixels finds the all-NaN image and the all-zero variance before any work; they
    // are still upstream's skips (skipped by default), while a negative variance stays a bad warp.
    for (const std::string bad : {"nan", "zerovar"}) {
        SCOPED_TRACE(bad);
        TempDir dir;
        auto s = settings("safeclip");
        s.validatePixels = true;
        const auto r =
            pipeline::runPatch("p", kernel::Box{}, warps(dir, bad), s, dir.file("o.fits"), nullptr, {});
        EXPECT_EQ(r.nUsed, 3);
    }
    TempDir dir;
    auto s = settings("safeclip");
    s.validatePixels = true;
    try {
        (void)pipeline::runPatch("p", kernel::Box{}, warps(dir, "negvar"), s, dir.file("o.fits"), nullptr,
                                 {});
        ADD_FAILURE() << "negative variance accepted";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ExitCode::Input);
        EXPECT_NE(std::string(e.what()).find("negative"), std::string::npos) << e.what();
    }
}

TEST(BadWarps, MixedFiltersAreRefusedUnlessAllowed) {
    // Issue 16 item 1: a g-band warp with two i-band warps used to coadd silently, labelled g. Now
    // the warps' FILTER cards must agree (the error names both files), unless
    // input.allow_mixed_filters, and then the coadd's FILTER card lists the bands.
    TempDir dir;
    std::vector<pipeline::WarpInput> inputs;
    for (int i = 0; i < 3; ++i) {
        test::TinyWarp w;
        w.visit = 60 + i;
        w.seed = 400U + static_cast<unsigned>(i);
        w.extraCards = {io::HeaderCard{"FILTER", std::string(i == 0 ? "g DECam" : "i DECam"), ""}};
        const std::string path = dir.file("f" + std::to_string(i) + ".fits");
        test::writeTinyWarp(path, w);
        inputs.push_back({-1, path});
    }
    auto s = settings("safeclip");
    try {
        (void)pipeline::runPatch("p", kernel::Box{}, inputs, s, dir.file("a.fits"), nullptr, {});
        ADD_FAILURE() << "mixed filters coadded";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ExitCode::Input);
        const std::string what = e.what();
        EXPECT_NE(what.find("f1.fits: filter 'i DECam' differs from 'g DECam' of " + inputs[0].path),
                  std::string::npos)
            << what;
    }
    s.allowMixedFilters = true;
    const auto r = pipeline::runPatch("p", kernel::Box{}, inputs, s, dir.file("b.fits"), nullptr, {});
    EXPECT_EQ(r.nUsed, 3);
    io::FitsFile f(dir.file("b.fits"), io::FitsFile::Mode::Read);
    f.moveToHdu(1);
    EXPECT_EQ(f.readString("FILTER").value_or(""), "mixed: g DECam, i DECam");
}
