// The patch pipeline's stages on tiny warps with a serial communicator (group = nullptr): each
// stage alone, the mode lists, and whole runs whose bytes do not depend on the tiling.
#include <gtest/gtest.h>

#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "Files.h"
#include "PipelineSettings.h"
#include "TempDir.h"
#include "TinyWarps.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/RowFormats.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/kernel/MaskDict.h"
#include "safeclip/pipeline/Driver.h"
#include "safeclip/pipeline/Stages.h"

using namespace safeclip;
using safeclip::test::TempDir;

namespace {

/// The defaults of configs/default.toml as pipeline settings (app::makePatchSettings builds the
/// same from a Config; the pipeline layer cannot see app).
pipeline::PatchSettings defaultSettings(const std::string& mode = "safeclip") {
    return test::defaultPatchSettings(mode);
}

/// Four warps; warp 2 (visit 12) has a bright transient at (40, 40).
std::vector<pipeline::WarpInput> writeWarps(const TempDir& dir, float varianceOfWarp3 = 1.0F) {
    std::vector<pipeline::WarpInput> inputs;
    for (int i = 0; i < 4; ++i) {
        test::TinyWarp w;
        w.visit = 10 + i;
        w.seed = 100U + static_cast<unsigned>(i);
        w.transientFlux = i == 2 ? 3000.0 : 0.0;
        w.variance = i == 3 ? varianceOfWarp3 : 1.0F;
        const std::string path = dir.file("warp" + std::to_string(i) + ".fits");
        test::writeTinyWarp(path, w);
        inputs.push_back({-1, path});
    }
    return inputs;
}

pipeline::PatchContext context(const std::vector<pipeline::WarpInput>& inputs,
                               const pipeline::PatchSettings& s, const std::string& out) {
    pipeline::PatchContext ctx("p", kernel::Box{}, s, nullptr, {}, out);
    ctx.warps.resize(inputs.size());
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        ctx.warps[i].input = inputs[i];
    }
    return ctx;
}

}  // namespace

TEST(Modes, SafeClipDetectsAndClipsMeanDoesNot) {
    auto names = [](const std::string& mode) {
        std::vector<std::string> out;
        for (const auto& st : pipeline::modeStages(mode)) {
            out.emplace_back(st.name);
        }
        return out;
    };
    // "cosmic_rays" is in both lists and does nothing unless cosmic_rays.detect.
    // "budget" checks the memory model before any read.
    const std::vector<std::string> mean{"open",  "budget", "cosmic_rays", "weights",
                                        "setup", "final",  "post",        "write"};
    const std::vector<std::string> safeclip{"open",      "resume", "budget", "cosmic_rays", "weights",
                                            "detection", "setup",  "trial",  "reduce",      "checkpoint",
                                            "final",     "post",   "write"};
    EXPECT_EQ(names("mean"), mean);
    EXPECT_EQ(names("safeclip"), safeclip);
    EXPECT_THROW((void)pipeline::modeStages("clip-everything"), ConfigError);
}

TEST(Stages, OpenFindsTheBoxVisitsAndScales) {
    TempDir dir;
    const auto s = defaultSettings();
    auto ctx = context(writeWarps(dir), s, dir.file("out.fits"));
    pipeline::openWarps(ctx);
    EXPECT_EQ(ctx.box, (kernel::Box{0, 0, 64, 64}));
    ASSERT_EQ(ctx.usedWarps().size(), 4U);
    EXPECT_EQ(ctx.warps[2].visit, 12);  // from the VISIT card
    // FLUXMAG0 = 10^(0.4*27) at zero point 27: s_i = 1.
    EXPECT_FLOAT_EQ(ctx.warps[0].scale, 1.0F);
    EXPECT_FALSE(ctx.wcsCards.empty());
}

TEST(Stages, OpenAppliesTheBadWarpPolicy) {
    TempDir dir;
    auto inputs = writeWarps(dir);
    inputs.push_back({-1, dir.write("broken.fits", "not a FITS file")});
    auto s = defaultSettings();
    {
        auto ctx = context(inputs, s, dir.file("out.fits"));
        try {
            pipeline::openWarps(ctx);
            ADD_FAILURE() << "no error for a broken warp with input.on_bad_warp = fail";
        } catch (const Error& e) {
            EXPECT_EQ(e.code(), ExitCode::Input);
            EXPECT_NE(std::string(e.what()).find("broken.fits"), std::string::npos) << e.what();
        }
    }
    s.skipBadWarps = true;
    auto ctx = context(inputs, s, dir.file("out.fits"));
    pipeline::openWarps(ctx);
    EXPECT_EQ(ctx.usedWarps().size(), 4U);
    EXPECT_EQ(ctx.warps[4].status.rfind("skipped: ", 0), 0U) << ctx.warps[4].status;
}

TEST(Stages, WeightsAreTheInverseClippedMeanVariance) {
    TempDir dir;
    const auto s = defaultSettings();
    auto ctx = context(writeWarps(dir, /*varianceOfWarp3=*/4.0F), s, dir.file("out.fits"));
    pipeline::openWarps(ctx);
    pipeline::measureWeights(ctx);
    // Constant variance v: MEANCLIP of a constant sample is v exactly; w = 1/v in float32.
    EXPECT_EQ(ctx.warps[0].weight, 1.0F);
    EXPECT_EQ(ctx.warps[3].weight, 0.25F);
    EXPECT_EQ(ctx.warps[0].checksum.rfind("crc32:", 0), 0U);
}

TEST(Stages, TheTransientIsClippedInItsWarpOnly) {
    TempDir dir;
    const auto s = defaultSettings();
    auto ctx = context(writeWarps(dir), s, dir.file("out.fits"));
    for (auto stage : {pipeline::openWarps, pipeline::measureWeights, pipeline::setupDetection,
                       pipeline::planTiles, pipeline::trialStacks, pipeline::decideClipping}) {
        stage(ctx);
    }
    EXPECT_EQ(ctx.detect.psfSigma, 1.5);  // every warp says PSFSIGMA = 1.5
    EXPECT_EQ(ctx.halo, pipeline::detectionHalo(ctx.detect));
    EXPECT_TRUE(ctx.warps[2].clipped.contains(40, 40));
    EXPECT_FALSE(ctx.warps[2].clipped.contains(20, 20));  // the static star stays
    for (int i : {0, 1, 3}) {
        EXPECT_TRUE(ctx.warps[static_cast<std::size_t>(i)].clipped.empty()) << "warp " << i;
    }
    // The decision record names the visit it clipped.
    bool found = false;
    for (const kernel::FootprintRow& f : ctx.decisions.footprints) {
        if (f.x0 <= 40 && 40 <= f.x1 && f.y0 <= 40 && 40 <= f.y1) {
            found = true;
            EXPECT_EQ(f.clippedVisits, "12");
            EXPECT_NE(f.rule, "kept") << f.reason;
        }
    }
    EXPECT_TRUE(found);
    EXPECT_EQ(static_cast<std::int64_t>(ctx.decisions.footprints.size()), ctx.result.nFootprints);
}

TEST(Stages, WriteRefusesAWarpChangedSinceOpen) {
    TempDir dir;
    const auto s = defaultSettings();
    const auto inputs = writeWarps(dir);
    auto runUpToWrite = [&](const std::string& out) {
        auto ctx = context(inputs, s, out);
        for (auto stage :
             {pipeline::openWarps, pipeline::measureWeights, pipeline::setupDetection, pipeline::planTiles,
              pipeline::trialStacks, pipeline::decideClipping, pipeline::finalStack, pipeline::postProcess}) {
            stage(ctx);
        }
        return ctx;
    };
    // Unchanged inputs: published, and INPUTS records each warp's size and mtime as "open" saw them.
    auto ok = runUpToWrite(dir.file("ok.fits"));
    pipeline::writeCoadd(ok);
    const io::Table t = io::readTable(dir.file("ok.fits"), "INPUTS");
    const auto& size = std::get<std::vector<std::int64_t>>(t.columns[8].data);
    EXPECT_EQ(t.columns[8].name, "size");
    EXPECT_EQ(t.columns[9].name, "mtime_ns");
    EXPECT_EQ(size[1], static_cast<std::int64_t>(std::filesystem::file_size(inputs[1].path)));
    EXPECT_EQ(std::get<std::vector<std::int64_t>>(t.columns[9].data)[1], ok.warps[1].mtimeNs);

    // Warp 1 rewritten in place (same size, one byte, a later mtime) between "post" and "write".
    const std::string out = dir.file("out.fits");
    auto ctx = runUpToWrite(out);
    const auto mtime = std::filesystem::last_write_time(inputs[1].path);
    {
        std::fstream f(inputs[1].path, std::ios::in | std::ios::out | std::ios::binary);
        f.seekg(-3000, std::ios::end);
        const char c = static_cast<char>(f.get());
        f.seekp(-3000, std::ios::end);
        f.put(static_cast<char>(c ^ 0x40));
    }
    std::filesystem::last_write_time(inputs[1].path, mtime + std::chrono::seconds(1));
    try {
        pipeline::writeCoadd(ctx);
        ADD_FAILURE() << "a warp changed during the run was not noticed";
    } catch (const Error& e) {  // guarded() rethrows the failure with its exit code
        EXPECT_NE(std::string(e.what()).find(inputs[1].path + ": changed during the run"), std::string::npos)
            << e.what();
        EXPECT_EQ(e.code(), ExitCode::Input);
    }
    EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(Driver, SameBytesForAnyTileSizeAndBudget) {
    TempDir dir;
    const auto inputs = writeWarps(dir);
    std::string reference;
    for (const auto& [tile, budget] : std::vector<std::pair<int, std::int64_t>>{
             {0, 64LL << 20}, {16, 64LL << 20}, {24, 1LL << 20}, {64, 300LL << 10}}) {
        auto s = defaultSettings();
        s.tileSize = tile;
        s.memoryBudget = budget;
        const std::string out = dir.file("coadd-" + std::to_string(tile) + ".fits");
        const pipeline::PatchResult r =
            pipeline::runPatch("p", kernel::Box{}, inputs, s, out, nullptr, pipeline::CheckpointOptions{});
        EXPECT_EQ(r.nUsed, 4);
        EXPECT_GE(r.nClippedFootprints, 1);
        EXPECT_EQ(r.nSingle + r.nSingleOnly + r.nDouble, r.nClippedFootprints);
        const std::string bytes = test::readFile(out);
        if (reference.empty()) {
            reference = bytes;
            EXPECT_EQ(r.nTiles, 1);
        } else {
            EXPECT_TRUE(bytes == reference) << "tile " << tile << " budget " << budget;
        }
    }
}

TEST(Driver, MeanModeWritesNoDecisionTables) {
    TempDir dir;
    const auto s = defaultSettings("mean");
    const std::string out = dir.file("mean.fits");
    const auto r = pipeline::runPatch("p", kernel::Box{}, writeWarps(dir), s, out, nullptr, {});
    EXPECT_EQ(r.nFootprints, 0);
    EXPECT_NO_THROW((void)io::readTable(out, "INPUTS"));
    EXPECT_THROW((void)io::readTable(out, "FOOTPRINTS"), InputError);
}

TEST(Driver, TheAfterWriteHookSeesThePublishedFile) {
    TempDir dir;
    auto s = defaultSettings();
    std::string seen;
    s.afterWrite = [&](const std::string& patch, const std::string& fits) { seen = patch + " " + fits; };
    const std::string out = dir.file("c.fits");
    (void)pipeline::runPatch("p", kernel::Box{}, writeWarps(dir), s, out, nullptr, {});
    EXPECT_EQ(seen, "p " + out);
}

TEST(Rows, OneDescriptionMakesTheFitsTableTheJsonAndTheMessage) {
    const kernel::FootprintRow f{7, 1, 2, 3, 4, 9, "single", "", "12"};
    const io::Table t = io::rowsToTable("FOOTPRINTS", std::vector<kernel::FootprintRow>{f});
    std::vector<std::string> names;
    for (const auto& c : t.columns) {
        names.push_back(c.name);
        EXPECT_EQ(c.size(), 1U);
    }
    EXPECT_EQ(names, (std::vector<std::string>{"id", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "area",
                                               "rule", "reason", "clipped_visits"}));
    EXPECT_EQ(t.columns[5].unit, "pixel");
    EXPECT_EQ(std::get<std::vector<std::string>>(t.columns[8].data).front(), "12");

    pipeline::PatchResult r;
    r.name = "p001";
    r.nSingle = 3;
    r.nSingleOnly = 5;
    r.nDouble = 1;
    const auto j = io::rowToJson(r);
    EXPECT_EQ(j["name"], "p001");
    EXPECT_EQ(j["clipped_by_rule"]["single"], 3);
    EXPECT_EQ(j["clipped_by_rule"]["single_only_candidate"], 5);
    EXPECT_EQ(j["clipped_by_rule"]["double"], 1);

    // Boost.Serialization (the MPI messages) carries every field, the per-rule counts included.
    std::stringstream ss;
    {
        boost::archive::binary_oarchive oa(ss);
        oa << r;
    }
    pipeline::PatchResult back;
    {
        boost::archive::binary_iarchive ia(ss);
        ia >> back;
    }
    EXPECT_EQ(io::rowToJson(back), j);
}

TEST(Stages, MaskPlanesOnlyTheWarpsNameAreResolvedAfterOpening) {
    // A plane that is not canonical (XTALK) and one that is removed by default (NOT_DEBLENDED),
    // both only in the warps' MP_* cards: their bits are known once the warps are open.
    TempDir dir;
    kernel::MaskDict dict = kernel::MaskDict::canonical();
    const int xtalk = dict.addPlane("XTALK");
    const int notDeblended = dict.addPlane("NOT_DEBLENDED");
    std::vector<pipeline::WarpInput> inputs;
    for (int i = 0; i < 3; ++i) {
        test::TinyWarp w;
        w.visit = 20 + i;
        w.seed = 7U + static_cast<unsigned>(i);
        w.dict = &dict;
        w.extraMask = {kernel::Box{5, 5, 10, 10},
                       static_cast<kernel::MaskPixel>((1U << xtalk) | (1U << notDeblended))};
        const std::string path = dir.file("x" + std::to_string(i) + ".fits");
        test::writeTinyWarp(path, w);
        inputs.push_back({-1, path});
    }
    auto s = defaultSettings();
    s.badMaskPlanes.emplace_back("XTALK");
    auto ctx = context(inputs, s, dir.file("out.fits"));
    pipeline::openWarps(ctx);
    const kernel::MaskPixel x = ctx.dict.bitMask("XTALK");
    const kernel::MaskPixel nd = ctx.dict.bitMask("NOT_DEBLENDED");
    ASSERT_NE(x, 0);
    ASSERT_NE(nd, 0);
    EXPECT_NE(ctx.bits.bad & x, 0);
    EXPECT_EQ(ctx.bits.remove, nd);
    EXPECT_EQ(ctx.finalCtrl.andMask & x, x);

    // A bad plane that neither the canonical planes nor any warp names is a configuration error.
    s.badMaskPlanes.emplace_back("NOT_A_PLANE");
    auto bad = context(inputs, s, dir.file("out.fits"));
    try {
        pipeline::openWarps(bad);
        ADD_FAILURE() << "no error for an unknown bad plane";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ExitCode::Config);
        EXPECT_NE(std::string(e.what()).find("NOT_A_PLANE"), std::string::npos) << e.what();
    }

    // So is a mask-propagation threshold for such a plane (it would silently propagate nothing);
    // one for a plane only the warps name (XTALK) is fine.
    s.badMaskPlanes.pop_back();
    s.maskPropagationThresholds.emplace_back("XTALK", 0.5);
    EXPECT_NO_THROW({
        auto ok = context(inputs, s, dir.file("out.fits"));
        pipeline::openWarps(ok);
    });
    s.maskPropagationThresholds.emplace_back("NOT_A_PLANE", 0.5);
    auto badThreshold = context(inputs, s, dir.file("out.fits"));
    try {
        pipeline::openWarps(badThreshold);
        ADD_FAILURE() << "no error for a threshold on an unknown plane";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ExitCode::Config);
        EXPECT_NE(
            std::string(e.what()).find("stack.mask_propagation_thresholds: unknown mask plane 'NOT_A_PLANE'"),
            std::string::npos)
            << e.what();
    }
    s.maskPropagationThresholds.pop_back();
    s.maskPropagationThresholds.pop_back();

    // Through a whole run: the XTALK pixels are rejected and NOT_DEBLENDED is gone from the coadd.
    const std::string out = dir.file("coadd.fits");
    (void)pipeline::runPatch("p", kernel::Box{}, inputs, s, out, nullptr, {});
    io::WarpReader coadd(out);
    kernel::MaskedImage mi;
    kernel::MaskDict outDict = kernel::MaskDict::canonical();
    coadd.conformTo(outDict);
    coadd.read(kernel::Box{0, 0, 64, 64}, mi);
    EXPECT_EQ(mi.mask(7, 7) & outDict.bitMask("NOT_DEBLENDED"), 0);
    EXPECT_NE(mi.mask(7, 7) & outDict.bitMask("NO_DATA"), 0);  // every input rejected there
}

TEST(Stages, ABudgetTooSmallForTheStacksFailsBeforeAnyPixelIsRead) {
    // 56 KiB holds the weights pass of a 64x64 warp (16 KiB sample + rows) but not the gathered patch
    // with the stacks' chunk rows: the "budget" stage refuses it before the weights pass reads a
    // pixel (the check used to come after that pass), naming the smallest budget that works.
    TempDir dir;
    const auto inputs = writeWarps(dir);
    auto s = defaultSettings();
    s.memoryBudget = 56LL << 10;  // = the gathered patch alone (14 B/px): no room for a row of the stacks
    const std::int64_t before = io::warpBytesRead();
    try {
        (void)pipeline::runPatch("p", kernel::Box{}, inputs, s, dir.file("b.fits"), nullptr, {});
        ADD_FAILURE() << "56 KiB accepted";
    } catch (const Error& e) {
        EXPECT_EQ(e.code(), ExitCode::Config);
        EXPECT_NE(std::string(e.what()).find("the smallest memory.max_per_rank that works"),
                  std::string::npos)
            << e.what();
    }
    EXPECT_EQ(io::warpBytesRead(), before) << "pixels were read before the budget was refused";
}
