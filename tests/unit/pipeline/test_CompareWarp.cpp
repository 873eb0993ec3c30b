// coadd.mode = "comparewarp" (spec §10, issue 15): 8 tiny warps with PSF sigmas 1.2-1.9 (so every
// warp but the widest is PSF-matched by a real kernel), a static star in all of them and a bright
// one-warp transient in warp 2. The transient is CLIPPED in its warp only and gone from the coadd;
// the star is kept; the bytes do not depend on the tile size or the budget; with 2 warps nothing
// can be clipped (mean nImage < 2.5).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>

#include "Files.h"
#include "PipelineSettings.h"
#include "TempDir.h"
#include "TinyWarps.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/FitsFile.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/pipeline/Driver.h"
#include "safeclip/pipeline/Stages.h"

using namespace safeclip;
using kernel::Box;
using safeclip::test::TempDir;

namespace {

const Box kBox{0, 0, 64, 64};
constexpr int kStarX = 20;
constexpr int kStarY = 20;
constexpr int kTrX = 42;
constexpr int kTrY = 40;
constexpr int kTransientWarp = 2;

std::vector<pipeline::WarpInput> writeWarps(const TempDir& dir, int n,
                                            const std::function<void(int, test::TinyWarp&)>& tweak = {}) {
    std::vector<pipeline::WarpInput> inputs;
    for (int i = 0; i < n; ++i) {
        test::TinyWarp w;
        w.box = kBox;
        w.visit = 500 + i;
        w.seed = 4100U + static_cast<unsigned>(i);
        w.psfSigma = 1.2 + 0.1 * i;
        w.sx = kStarX;
        w.sy = kStarY;
        w.tx = kTrX;
        w.ty = kTrY;
        w.transientFlux = i == kTransientWarp ? 600.0 : 0.0;
        if (tweak) {
            tweak(i, w);
        }
        const std::string path = dir.file("w" + std::to_string(i) + ".fits");
        test::writeTinyWarp(path, w);
        inputs.push_back({-1, path});
    }
    return inputs;
}

pipeline::PatchSettings cwSettings() {
    auto s = test::defaultPatchSettings("comparewarp");
    // §10's base changes (app::makePatchSettings applies them when the keys are not set).
    s.badMaskPlanes = {"NO_DATA", "BAD", "SAT"};
    s.removeMaskPlanes = {"NOT_DEBLENDED", "EDGE"};
    s.sigmaClip = 3.0;
    s.clipIter = 2;
    return s;
}

template <class T>
std::vector<T> columnOf(const io::Table& t, const std::string& name) {
    const auto* c = io::column<T>(t, name);
    return c != nullptr ? *c : std::vector<T>{};
}

/// (visit, x, y) of every CLIPPED_SPANS pixel.
std::set<std::tuple<std::int64_t, int, int>> clippedPixels(const std::string& fits) {
    const io::Table spans = io::readTable(fits, "CLIPPED_SPANS");
    const auto visit = columnOf<std::int64_t>(spans, "visit");
    const auto y = columnOf<std::int64_t>(spans, "y");
    const auto x0 = columnOf<std::int64_t>(spans, "x0");
    const auto x1 = columnOf<std::int64_t>(spans, "x1");
    std::set<std::tuple<std::int64_t, int, int>> out;
    for (std::size_t k = 0; k < visit.size(); ++k) {
        for (auto x = x0[k]; x <= x1[k]; ++x) {
            out.emplace(visit[k], static_cast<int>(x), static_cast<int>(y[k]));
        }
    }
    return out;
}

/// An integer (or logical: 1/0) card of the primary HDU, nullopt when absent.
std::optional<std::int64_t> primaryCard(const std::string& fits, const std::string& key) {
    const io::FitsFile f(fits, io::FitsFile::Mode::Read);
    return f.readInt(key);
}

}  // namespace

TEST(CompareWarp, ModeIsListed) {
    const auto& stages = pipeline::modeStages("comparewarp");
    std::vector<std::string> names;
    for (const auto& s : stages) {
        names.emplace_back(s.name);
    }
    const std::vector<std::string> want = {"open",       "resume", "budget",   "cosmic_rays", "weights",
                                           "cw_setup",   "setup",  "cw_stats", "cw_compare",  "cw_decide",
                                           "checkpoint", "final",  "cw_edge",  "post",        "write"};
    EXPECT_EQ(names, want);
    // On --resume the decision checkpoint stands for exactly these.
    std::vector<std::string> skipped;
    for (const auto& s : stages) {
        if (s.skipWhenResumed) {
            skipped.emplace_back(s.name);
        }
    }
    EXPECT_EQ(skipped,
              (std::vector<std::string>{"weights", "cw_stats", "cw_compare", "cw_decide", "checkpoint"}));
}

namespace {

/// Sets SAFECLIP_FAIL_AT for its lifetime.
class FailAt {
public:
    explicit FailAt(const char* spec) { ::setenv("SAFECLIP_FAIL_AT", spec, 1); }
    ~FailAt() { ::unsetenv("SAFECLIP_FAIL_AT"); }
    FailAt(const FailAt&) = delete;
    FailAt& operator=(const FailAt&) = delete;
};

}  // namespace

// Issue 15 item 7: the mode's decision checkpoint. A run that fails after it (at the start of
// "final") keeps <patch>.reduced.h5; --resume (another tile size) loads it, skips weights, cw_stats,
// cw_compare and cw_decide (a failure injected into cw_compare or cw_stats does not fire) and writes
// the bytes of an uninterrupted run. Warp 0 (σ 1.2, the widest matching kernel) has a NaN + NO_DATA
// block: its PSF-matched copy has no value on a band around it where the direct warp has data, so
// the coadd there depends on the checkpoint's whole-patch noData spans (nImage 7, not 8).
TEST(CompareWarp, ResumeFromTheDecisionCheckpointGivesTheSameBytes) {
    TempDir dir;
    const Box hole{6, 48, 6, 6};
    const auto inputs = writeWarps(dir, 8, [&](int i, test::TinyWarp& w) {
        if (i == 0) {
            w.edit = [hole](kernel::MaskedImage& mi) {
                const kernel::MaskPixel noData = kernel::MaskDict::canonical().bitMask("NO_DATA");
                for (int y = hole.y0; y < hole.y1(); ++y) {
                    for (int x = hole.x0; x < hole.x1(); ++x) {
                        mi.image(x, y) = std::nanf("");
                        mi.mask(x, y) |= noData;
                    }
                }
            };
        }
    });
    auto s = cwSettings();
    s.tileSize = 16;
    const std::string ref = dir.file("ref.fits");
    (void)pipeline::runPatch("p", kBox, inputs, s, ref, nullptr, {});
    ASSERT_FALSE(clippedPixels(ref).empty());
    const kernel::ImageU16 n = io::readNImage(ref);
    EXPECT_EQ(n(hole.x1() + 1, hole.y0 + 2), 7) << "the band of warp 0's NO_DATA is not left out";
    EXPECT_EQ(n(hole.x1() + 12, hole.y0 + 2), 8);

    const std::string ckdir = dir.file("ck");
    for (const char* stage : {"0:cw_compare", "0:cw_stats"}) {
        s.tileSize = 16;
        {
            const FailAt failAt("0:final");
            EXPECT_THROW((void)pipeline::runPatch("p", kBox, inputs, s, dir.file("x.fits"), nullptr,
                                                  {ckdir, false, false, 0.0}),
                         Error);
        }
        ASSERT_TRUE(std::filesystem::exists(ckdir + "/p.reduced.h5"));
        s.tileSize = 24;
        const FailAt failAt(stage);  // fires only if the stage runs
        const std::string path = dir.file(std::string("res-") + (stage + 2) + ".fits");
        ASSERT_NO_THROW(
            (void)pipeline::runPatch("p", kBox, inputs, s, path, nullptr, {ckdir, true, false, 0.0}))
            << stage << " ran on --resume";
        EXPECT_TRUE(test::readFile(path) == test::readFile(ref)) << "resumed with " << stage << " armed";
        EXPECT_FALSE(std::filesystem::exists(ckdir + "/p.reduced.h5")) << "not removed once written";
    }
}

TEST(CompareWarp, TransientIsClippedInItsWarpOnlyAndTheStarIsKept) {
    TempDir dir;
    const auto inputs = writeWarps(dir, 8);
    const std::string out = dir.file("cw.fits");
    const pipeline::PatchResult r = pipeline::runPatch("p", kBox, inputs, cwSettings(), out, nullptr, {});
    EXPECT_EQ(r.nUsed, 8);
    // 8 warps: E = int(min(0.4·N, 2 + 0.03·N)) >= 1 at the mean nImage, so clipping is possible.
    EXPECT_FALSE(r.nothingClippable);
    EXPECT_EQ(primaryCard(out, "CWNOCLIP"), std::optional<std::int64_t>(0));
    const auto clipped = clippedPixels(out);
    ASSERT_FALSE(clipped.empty());
    for (const auto& [v, x, y] : clipped) {
        EXPECT_EQ(v, 500 + kTransientWarp) << "(" << x << ", " << y << ")";
        EXPECT_LT(std::hypot(x - kTrX, y - kTrY), 8.0) << "(" << x << ", " << y << ")";
    }
    EXPECT_TRUE(clipped.count({500 + kTransientWarp, kTrX, kTrY}));
    // FOOTPRINTS: the transient's candidate is an artefact; nothing near the star is.
    const io::Table fp = io::readTable(out, "FOOTPRINTS");
    const auto rule = columnOf<std::string>(fp, "rule");
    const auto fx0 = columnOf<std::int64_t>(fp, "bbox_x0");
    const auto fx1 = columnOf<std::int64_t>(fp, "bbox_x1");
    ASSERT_FALSE(rule.empty());
    int artefacts = 0;
    for (std::size_t k = 0; k < rule.size(); ++k) {
        if (rule[k] == "artefact") {
            ++artefacts;
            EXPECT_GT(fx1[k], kStarX + 5);
            EXPECT_LE(fx0[k], kTrX);
        }
    }
    EXPECT_GE(artefacts, 1);
    // INPUTS carry the template weights and the variance factors.
    const io::Table in = io::readTable(out, "INPUTS");
    const auto tw = columnOf<double>(in, "template_weight");
    const auto vf = columnOf<double>(in, "variance_factor");
    ASSERT_EQ(tw.size(), 8U);
    ASSERT_EQ(vf.size(), 8U);
    for (std::size_t i = 0; i < 8; ++i) {
        EXPECT_GT(tw[i], 0.0);
        EXPECT_GT(vf[i], 0.2);
        EXPECT_LT(vf[i], 5.0);
    }
    // The coadd: the transient is gone (600 / (2π 1.4²) ≈ 49 at the peak, /8 ≈ 6 if it stayed);
    // the star keeps its peak (2000 / (2π σ²) averaged over the warps: > 100).
    io::WarpReader coadd(out);
    kernel::MaskDict dict = kernel::MaskDict::canonical();
    coadd.conformTo(dict);
    const kernel::MaskedImage mi = coadd.read(kBox);
    EXPECT_LT(std::abs(mi.image(kTrX, kTrY)), 2.0F);
    EXPECT_NE(mi.mask(kTrX, kTrY) & dict.bitMask("CLIPPED"), 0);
    EXPECT_GT(mi.image(kStarX, kStarY), 100.0F);
    EXPECT_EQ(mi.mask(kStarX, kStarY) & dict.bitMask("CLIPPED"), 0);
    // The rim of the PSF-matched warps is not made NO_DATA: the coadd keeps its edge pixels.
    EXPECT_EQ(mi.mask(0, 0) & dict.bitMask("NO_DATA"), 0);
    EXPECT_TRUE(std::isfinite(mi.image(0, 0)));
    EXPECT_EQ(mi.mask(63, 32) & dict.bitMask("NO_DATA"), 0);
}

TEST(CompareWarp, SameBytesForAnyTileSizeAndBudget) {
    TempDir dir;
    const auto inputs = writeWarps(dir, 8);
    std::string reference;
    for (const auto& [tile, budget] : std::vector<std::pair<int, std::int64_t>>{
             {0, 64LL << 20}, {16, 64LL << 20}, {24, 64LL << 20}, {16, 2LL << 20}, {24, 1LL << 20}}) {
        auto s = cwSettings();
        s.tileSize = tile;
        s.memoryBudget = budget;
        const std::string out =
            dir.file("t-" + std::to_string(tile) + "-" + std::to_string(budget) + ".fits");
        (void)pipeline::runPatch("p", kBox, inputs, s, out, nullptr, {});
        const std::string bytes = test::readFile(out);
        if (reference.empty()) {
            reference = bytes;
            EXPECT_FALSE(clippedPixels(out).empty());
        } else {
            EXPECT_TRUE(bytes == reference) << "tile " << tile << " budget " << budget;
        }
    }
}

TEST(CompareWarp, TwoWarpsClipNothing) {
    TempDir dir;
    const auto inputs = writeWarps(dir, 3);  // warp 2 carries the transient
    const std::vector<pipeline::WarpInput> two = {inputs[1], inputs[2]};
    const std::string out = dir.file("two.fits");
    const pipeline::PatchResult r = pipeline::runPatch("p", kBox, two, cwSettings(), out, nullptr, {});
    EXPECT_TRUE(clippedPixels(out).empty());
    const io::Table fp = io::readTable(out, "FOOTPRINTS");
    for (const auto& rule : columnOf<std::string>(fp, "rule")) {
        EXPECT_NE(rule, "artefact");
    }
    // Mean nImage < 2 < 2.5: E = int(0.4·N) = 0, flagged in the result (report.json) and the FITS.
    EXPECT_TRUE(r.nothingClippable);
    EXPECT_EQ(primaryCard(out, "CWNOCLIP"), std::optional<std::int64_t>(1));
    // The limit comes from the config: with max_fraction_epochs_low = 0.6, E = int(0.6·N) = 1 at N >= 1.67.
    auto s = cwSettings();
    s.compareWarp.maxFractionEpochsLow = 0.6;
    const std::string out6 = dir.file("two6.fits");
    EXPECT_FALSE(pipeline::runPatch("p", kBox, two, s, out6, nullptr, {}).nothingClippable);
    EXPECT_EQ(primaryCard(out6, "CWNOCLIP"), std::optional<std::int64_t>(0));
    // safeclip mode: never flagged, and its primary HDU has no such card (its bytes do not change).
    const std::string sc = dir.file("sc.fits");
    EXPECT_FALSE(pipeline::runPatch("p", kBox, two, test::defaultPatchSettings("safeclip"), sc, nullptr, {})
                     .nothingClippable);
    EXPECT_EQ(primaryCard(sc, "CWNOCLIP"), std::nullopt);
}

TEST(CompareWarp, TooSmallABudgetFailsNamingTheKey) {
    TempDir dir;
    const auto inputs = writeWarps(dir, 8);
    auto s = cwSettings();
    s.memoryBudget = 64LL * 64 * 36 - 1;  // below one whole warp's comparewarp statistics
    s.tileSize = 16;
    try {
        (void)pipeline::runPatch("p", kBox, inputs, s, dir.file("tight.fits"), nullptr, {});
        ADD_FAILURE() << "a budget below one warp's statistics was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("memory.max_per_rank"), std::string::npos) << e.what();
    }
}
