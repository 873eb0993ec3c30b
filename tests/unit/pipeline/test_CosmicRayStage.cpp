// The optional "cosmic_rays" stage (issue 14 item 3): kernel::findCosmicRays on each warp before any
// stack; the pixels found get the CR plane, are left out of every stack (REJECTED in the coadd) and
// are recorded (INPUTS n_cr_pixels / n_cosmic_rays, CR_SPANS). Warps here: 5 warps of 256x256 with
// unit noise, a static star (psf sigma 1.5) in all of them; warp 0 carries three hot pixels and a
// 100-px diagonal track, warp 3 a 2-px cluster.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "Files.h"
#include "PipelineSettings.h"
#include "TempDir.h"
#include "TinyWarps.h"
#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/pipeline/Driver.h"

using namespace safeclip;
using kernel::Box;
using safeclip::test::TempDir;

namespace {

const Box kBox{0, 0, 256, 256};
constexpr int kCrPixelMax = 20000;
constexpr int kStarX = 30;
constexpr int kStarY = 60;

/// The pixels given a cosmic-ray hit, per warp index.
std::vector<std::pair<int, int>> hits(int warp) {
    std::vector<std::pair<int, int>> out;
    if (warp == 0) {
        out = {{12, 15}, {170, 20}, {50, 185}};
        for (int k = 0; k <= 100; ++k) {
            out.emplace_back(100 + k, 100 + (k * 3) / 4);  // a track at ~37 degrees, x 100..200
        }
    } else if (warp == 3) {
        out = {{60, 140}, {61, 141}};
    }
    return out;
}

std::vector<pipeline::WarpInput> writeWarps(const TempDir& dir) {
    std::vector<pipeline::WarpInput> inputs;
    for (int i = 0; i < 5; ++i) {
        test::TinyWarp w;
        w.box = kBox;
        w.visit = 300 + i;
        w.seed = 900U + static_cast<unsigned>(i);
        w.sx = kStarX;
        w.sy = kStarY;
        const auto h = hits(i);
        w.edit = [h](kernel::MaskedImage& mi) {
            for (const auto& [x, y] : h) {
                mi.image(x, y) += 400.0F;  // 400 sigma: a hit, as the simulator's
            }
        };
        const std::string path = dir.file("w" + std::to_string(i) + ".fits");
        test::writeTinyWarp(path, w);
        inputs.push_back({-1, path});
    }
    return inputs;
}

pipeline::PatchSettings withStage() {
    auto s = test::defaultPatchSettings();
    s.cosmicRays.detect = true;
    s.cosmicRays.control.keepCRs = true;
    s.cosmicRays.control.nCrPixelMax = kCrPixelMax;
    return s;
}

template <class T>
std::vector<T> columnOf(const io::Table& t, const std::string& name) {
    const auto* c = io::column<T>(t, name);
    return c != nullptr ? *c : std::vector<T>{};
}

}  // namespace

TEST(CosmicRayStage, HitsAndTracksAreFoundLeftOutAndRecorded) {
    TempDir dir;
    const auto inputs = writeWarps(dir);
    const std::string out = dir.file("on.fits");
    const pipeline::PatchResult r = pipeline::runPatch("p", kBox, inputs, withStage(), out, nullptr, {});
    EXPECT_EQ(r.nUsed, 5);
    // Every injected pixel is found (the kernel may grow a CR by a pixel or two, not more).
    const io::Table spans = io::readTable(out, "CR_SPANS");
    const auto visit = columnOf<std::int64_t>(spans, "visit");
    const auto y = columnOf<std::int64_t>(spans, "y");
    const auto x0 = columnOf<std::int64_t>(spans, "x0");
    const auto x1 = columnOf<std::int64_t>(spans, "x1");
    ASSERT_FALSE(visit.empty());
    std::set<std::tuple<std::int64_t, int, int>> flagged;
    for (std::size_t k = 0; k < visit.size(); ++k) {
        for (auto x = x0[k]; x <= x1[k]; ++x) {
            flagged.emplace(visit[k], static_cast<int>(x), static_cast<int>(y[k]));
        }
    }
    std::int64_t injected = 0;
    for (int i = 0; i < 5; ++i) {
        for (const auto& [x, yy] : hits(i)) {
            EXPECT_TRUE(flagged.count({300 + i, x, yy})) << "warp " << i << " (" << x << ", " << yy << ")";
            ++injected;
        }
    }
    EXPECT_LE(static_cast<std::int64_t>(flagged.size()), 3 * injected);
    EXPECT_EQ(r.nCosmicRayPixels, static_cast<std::int64_t>(flagged.size()));
    // The star (in every warp, peak ~140 sigma) is not a cosmic ray.
    for (const auto& [v, x, yy] : flagged) {
        EXPECT_GT(std::hypot(x - kStarX, yy - kStarY), 6.0) << "star pixel flagged in visit " << v;
    }
    // INPUTS: per warp counts; warps 1, 2, 4 have none.
    const io::Table in = io::readTable(out, "INPUTS");
    const auto nPix = columnOf<std::int64_t>(in, "n_cr_pixels");
    const auto nCr = columnOf<std::int64_t>(in, "n_cosmic_rays");
    ASSERT_EQ(nPix.size(), 5U);
    ASSERT_EQ(nCr.size(), 5U);
    EXPECT_GE(nPix[0], 104);
    EXPECT_GE(nCr[0], 4);  // three hits and the track (a track may break into pieces)
    EXPECT_EQ(nPix[1], 0);
    EXPECT_EQ(nPix[2], 0);
    EXPECT_GE(nPix[3], 2);
    EXPECT_EQ(nPix[4], 0);
    // In the coadd the hits are gone (left out: mean of the other warps, noise ~0.5) and REJECTED.
    io::WarpReader coadd(out);
    kernel::MaskDict dict = kernel::MaskDict::canonical();
    coadd.conformTo(dict);
    const kernel::MaskedImage mi = coadd.read(kBox);
    for (const auto& [x, yy] : hits(0)) {
        EXPECT_LT(std::abs(mi.image(x, yy)), 5.0F) << x << ", " << yy;  // 400 / 5 = 80 if it stayed
        EXPECT_NE(mi.mask(x, yy) & dict.bitMask("REJECTED"), 0) << x << ", " << yy;
    }
}

TEST(CosmicRayStage, OffLeavesTheOutputAsBefore) {
    TempDir dir;
    const auto inputs = writeWarps(dir);
    const std::string out = dir.file("off.fits");
    const auto r = pipeline::runPatch("p", kBox, inputs, test::defaultPatchSettings(), out, nullptr, {});
    EXPECT_EQ(r.nCosmicRayPixels, 0);
    const io::Table in = io::readTable(out, "INPUTS");
    EXPECT_EQ(io::column<std::int64_t>(in, "n_cr_pixels"), nullptr);
    EXPECT_THROW((void)io::readTable(out, "CR_SPANS"), InputError);
}

TEST(CosmicRayStage, SameBytesForAnyBudgetAndTileSize) {
    TempDir dir;
    const auto inputs = writeWarps(dir);
    // The stage's cells are a science setting: ranks, tiles and the budget never change them. Here
    // each warp (256 px) is one cell; `small` is just enough for it, and the stacks are chunked.
    const geom::CosmicRayStage stage{1024, pipeline::cosmicRayHalo(withStage().cosmicRays.control),
                                     kCrPixelMax};
    ASSERT_EQ(stage.halo, 40);
    const std::int64_t small = geom::cosmicRayPeakBytes(kBox, stage, 64LL << 20) + 1024;
    std::string reference;
    for (const auto& [tile, budget] : std::vector<std::pair<int, std::int64_t>>{
             {0, 64LL << 20}, {32, 64LL << 20}, {0, small}, {64, small}}) {
        auto s = withStage();
        s.tileSize = tile;
        s.memoryBudget = budget;
        const std::string out =
            dir.file("c-" + std::to_string(tile) + "-" + std::to_string(budget) + ".fits");
        (void)pipeline::runPatch("p", kBox, inputs, s, out, nullptr, {});
        const std::string bytes = test::readFile(out);
        if (reference.empty()) {
            reference = bytes;
        } else {
            EXPECT_TRUE(bytes == reference) << "tile " << tile << " budget " << budget;
        }
    }
    // A budget below one cell is refused before any pixel is searched, naming both keys.
    auto s = withStage();
    s.memoryBudget = small - 2048;
    try {
        (void)pipeline::runPatch("p", kBox, inputs, s, dir.file("tight.fits"), nullptr, {});
        ADD_FAILURE() << "a budget below one cosmic-ray cell was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("cosmic_rays.cell_size"), std::string::npos) << e.what();
    }
}

TEST(CosmicRayStage, CellsStitchTheWarpTogether) {
    // Cells of 64 px (16 per warp, each searched with its 40-px halo) find the same CR pixels as one
    // 256-px cell here: the hits and the 100-px track cross cell edges, and no first-pass cluster
    // reaches 40 px beyond an edge (kernel/CosmicRays.h, "Reach"). Only CONFIG and SCCFGHSH differ
    // (cell_size is a science setting), so the CR_SPANS tables and the pixels are compared.
    TempDir dir;
    const auto inputs = writeWarps(dir);
    auto whole = withStage();
    auto cells = withStage();
    cells.cosmicRays.cellSize = 64;
    ASSERT_EQ(geom::cosmicRayCells(kBox, 64).size(), 16U);
    (void)pipeline::runPatch("p", kBox, inputs, whole, dir.file("whole.fits"), nullptr, {});
    (void)pipeline::runPatch("p", kBox, inputs, cells, dir.file("cells.fits"), nullptr, {});
    const io::Table a = io::readTable(dir.file("whole.fits"), "CR_SPANS");
    const io::Table b = io::readTable(dir.file("cells.fits"), "CR_SPANS");
    for (const char* col : {"visit", "y", "x0", "x1"}) {
        EXPECT_EQ(columnOf<std::int64_t>(a, col), columnOf<std::int64_t>(b, col)) << col;
    }
    io::WarpReader ra(dir.file("whole.fits"));
    io::WarpReader rb(dir.file("cells.fits"));
    const kernel::MaskedImage ia = ra.read(kBox);
    const kernel::MaskedImage ib = rb.read(kBox);
    EXPECT_EQ(ia.image.data(), ib.image.data());
    EXPECT_EQ(ia.mask.data(), ib.mask.data());
}
