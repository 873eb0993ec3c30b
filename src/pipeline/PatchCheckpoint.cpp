/// @file PatchCheckpoint.cpp  Stages "resume" and "checkpoint" (the decision checkpoint of a
/// patch) and the names of its checkpoint files.
#include "safeclip/pipeline/PatchCheckpoint.h"

#include <chrono>
#include <filesystem>
#include <string_view>

#include "safeclip/geom/Plan.h"
#include "safeclip/io/AtomicFile.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/parallel/Logging.h"
#include "safeclip/pipeline/Driver.h"
#include "safeclip/pipeline/Guard.h"
#include "safeclip/pipeline/Stages.h"

namespace safeclip::pipeline {

using parallel::log;

std::string decisionCheckpointPath(const std::string& dir, const std::string& patch) {
    return dir + "/" + patch + ".reduced.h5";
}

std::string tileCheckpointDir(const std::string& dir, const std::string& patch) {
    return dir + "/" + patch + ".tiles";
}

std::string tileCheckpointPath(const std::string& dir, const std::string& patch, const kernel::Box& b) {
    return tileCheckpointDir(dir, patch) + "/tile_" + std::to_string(b.x0) + "_" + std::to_string(b.y0) +
           "_" + std::to_string(b.width) + "x" + std::to_string(b.height) + ".h5";
}

io::CheckpointKey checkpointKey(const PatchContext& ctx) {
    io::CheckpointKey key;
    key.configHash = ctx.settings.scienceConfigHash;
    const bool compareWarp = ctx.settings.mode == "comparewarp";
    for (const Warp& w : ctx.warps) {
        // The manifest's visit too (-1: from the header): it names the warp in the decision tables.
        std::string line = io::fileFingerprint(w.input.path) + "|visit " + std::to_string(w.input.visit);
        if (compareWarp && !w.input.psfMatchedPath.empty()) {  // its pixels decide the comparewarp decisions
            line += "|psf_matched " + io::fileFingerprint(w.input.psfMatchedPath);
        }
        if (w.input.zeroPoint) {  // the manifest's zero point scales the warp
            line += "|zero_point " + std::to_string(*w.input.zeroPoint);
        }
        key.inputs.push_back(std::move(line));
    }
    // The patch box decides every pixel: a manifest whose box changed must not reuse decisions.
    key.inputs.push_back("patch " + ctx.name + " box " + ctx.box.str());
    key.inputHash = io::hashStrings(key.inputs);
    return key;
}

namespace {

/// True for "<digits>" (a pid suffix) and, with `sign`, an optional leading '-'.
bool isNumber(std::string_view s, bool sign) {
    if (sign && !s.empty() && s.front() == '-') {
        s.remove_prefix(1);
    }
    return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
}

/// True for the names tileCheckpointPath() produces, "tile_<x0>_<y0>_<w>x<h>.h5", and their
/// temporaries "<that>.tmp.<pid>".
bool isTileCheckpointName(std::string_view name) {
    if (const auto tmp = name.find(".h5.tmp."); tmp != std::string_view::npos) {
        if (!isNumber(name.substr(tmp + 8), false)) {
            return false;
        }
        name = name.substr(0, tmp + 3);
    }
    constexpr std::string_view kPrefix = "tile_";
    constexpr std::string_view kSuffix = ".h5";
    if (name.size() <= kPrefix.size() + kSuffix.size() || name.substr(0, kPrefix.size()) != kPrefix ||
        name.substr(name.size() - kSuffix.size()) != kSuffix) {
        return false;
    }
    name = name.substr(kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size());  // x0_y0_WxH
    const auto u1 = name.find('_');
    const auto u2 = u1 == std::string_view::npos ? u1 : name.find('_', u1 + 1);
    const auto x = u2 == std::string_view::npos ? u2 : name.find('x', u2 + 1);
    return x != std::string_view::npos && isNumber(name.substr(0, u1), true) &&
           isNumber(name.substr(u1 + 1, u2 - u1 - 1), true) &&
           isNumber(name.substr(u2 + 1, x - u2 - 1), false) && isNumber(name.substr(x + 1), false);
}

}  // namespace

void removeCheckpoints(const std::string& dir, const std::string& patch) {
    if (dir.empty()) {
        return;
    }
    namespace fs = std::filesystem;
    std::error_code ec;
    const std::string decision = decisionCheckpointPath(dir, patch);
    fs::remove(decision, ec);
    const std::string pidSuffix = fs::path(decision).filename().string() + ".tmp.";
    if (fs::is_directory(dir, ec)) {
        for (const auto& e : fs::directory_iterator(dir, ec)) {
            const std::string name = e.path().filename().string();
            if (name.rfind(pidSuffix, 0) == 0 &&
                isNumber(std::string_view(name).substr(pidSuffix.size()), false) &&
                !io::temporaryInUse(e.path().string())) {
                fs::remove(e.path(), ec);
            }
        }
    }
    const std::string tiles = tileCheckpointDir(dir, patch);
    if (fs::is_directory(fs::symlink_status(tiles, ec))) {
        std::vector<fs::path> mine;
        for (const auto& e : fs::directory_iterator(tiles, ec)) {
            if (isTileCheckpointName(e.path().filename().string()) &&
                !io::temporaryInUse(e.path().string())) {
                mine.push_back(e.path());
            }
        }
        for (const fs::path& f : mine) {
            fs::remove(f, ec);
        }
        fs::remove(tiles, ec);  // removes a directory only when empty: a foreign file keeps it
    }
}

void removeCheckpoints(const PatchContext& ctx) {
    removeCheckpoints(ctx.ckpt.dir, ctx.name);
}

void removeCheckpointDirIfEmpty(const std::string& dir) {
    if (!dir.empty()) {
        std::error_code ec;
        std::filesystem::remove(dir, ec);  // fails, harmlessly, unless the directory is empty
    }
}

/// With --resume: the root reads the decision checkpoint and broadcasts it. A checkpoint of another
/// configuration (coadd.mode included) or input list is refused (ConfigError) unless --restart; an
/// invalid one is reported and recomputed. comparewarp: also each warp's template weight, variance
/// factor and whole-patch NO_DATA spans (every rank: its final tiles may be any), σ_m and the largest
/// kernel radius (for cw_setup: the halo and PSFSIGMA of the first run, whichever warps cw_stats
/// dropped), the FOOTPRINTS rows and the EDGE spans (root).
void resumeDecisions(PatchContext& ctx) {
    if (ctx.ckpt.dir.empty() || !ctx.ckpt.resume) {
        return;
    }
    const std::string path = decisionCheckpointPath(ctx.ckpt.dir, ctx.name);
    io::PatchState state;
    int found = 0;
    guarded(ctx, "resume", [&] {
        if (!ctx.isRoot()) {
            return;
        }
        io::CheckpointRead r = io::readPatchCheckpoint(path, checkpointKey(ctx));
        if (r.status == io::CheckpointStatus::Ok && r.state.mode != ctx.settings.mode) {
            // The config hash covers coadd.mode, so only a hand-made file gets here.
            r.status = io::CheckpointStatus::ConfigChanged;
            r.reason = path + ": made with coadd.mode = \"" + r.state.mode + "\", this run has \"" +
                       ctx.settings.mode + "\"";
        }
        switch (r.status) {
            case io::CheckpointStatus::Ok:
                state = r.state;
                found = state.warps.size() == ctx.warps.size() ? 1 : 0;
                if (found == 0) {
                    log().warn("ignoring checkpoint {}: it lists {} warps, the patch has {}", path,
                               state.warps.size(), ctx.warps.size());
                }
                break;
            case io::CheckpointStatus::Missing:
                break;
            case io::CheckpointStatus::Invalid:
                log().warn("ignoring invalid checkpoint: {}", r.reason);
                break;
            case io::CheckpointStatus::ConfigChanged:
            case io::CheckpointStatus::InputChanged:
                if (!ctx.ckpt.restart) {
                    throw ConfigError(r.reason + "; rerun with --restart to start this patch over");
                }
                log().warn("--restart: discarding checkpoint: {}", r.reason);
                break;
        }
    });
    parallel::broadcastFromRoot(ctx.group, found);
    if (found == 0) {
        return;
    }
    parallel::broadcastFromRoot(ctx.group, state);
    for (std::size_t i = 0; i < ctx.warps.size(); ++i) {
        Warp& w = ctx.warps[i];
        const io::WarpState& ws = state.warps[i];
        w.weight = ws.weight;
        w.scale = ws.scale;
        w.used = ws.used;
        w.status = ws.status;
        if (!w.used) {
            w.reader.reset();
        }
        w.clipped = kernel::SpanSet::fromSortedSpans(ws.clipped);
        w.nClippedPixels = ws.nClippedPixels;
        w.nBigFootprints = ws.nBigFootprints;
        w.checksum = ws.checksum;
        w.templateWeight = ws.templateWeight;
        w.varianceFactor = ws.varianceFactor;
        w.noData = kernel::SpanSet::fromSortedSpans(ws.noData);
    }
    ctx.result.nFootprints = state.nFootprints;
    ctx.result.nClippedFootprints = state.nClippedFootprints;
    ctx.decisions = std::move(state.decisions);
    ctx.resumed = true;
    if (ctx.settings.mode == "comparewarp") {
        ctx.cwModelSigma = state.psfSigma;
        ctx.cwMaxRadius = state.cwMaxRadius;
        ctx.cwMeanNImage = state.cwMeanNImage;
        if (ctx.isRoot()) {
            ctx.cwRows = std::move(state.cwRows);
            ctx.cwEdge = kernel::SpanSet::fromSortedSpans(std::move(state.cwEdge));
        }
    }
    if (!ctx.isRoot()) {
        return;
    }
    if (ctx.settings.mode == "comparewarp") {
        std::int64_t clippedPixels = 0;
        for (const Warp& w : ctx.warps) {
            clippedPixels += w.nClippedPixels;
        }
        log().info(
            "patch {}: resumed from {} (weights, comparewarp statistics and decisions: model psf "
            "sigma {:.3f} px, {} candidates, {} artefacts; {} CLIPPED warp pixels; mean approximate "
            "nImage {:.2f})",
            ctx.name, path, ctx.cwModelSigma, state.nFootprints, state.nClippedFootprints, clippedPixels,
            ctx.cwMeanNImage);
        ctx.result.nothingClippable = compareWarpNothingClippable(ctx.settings.compareWarp, ctx.cwMeanNImage);
        if (ctx.result.nothingClippable) {
            log().warn(
                "patch {}: comparewarp: mean nImage {:.2f}: no artefact can be clipped (E = 0; resumed; "
                "report.json nothing_can_be_clipped, FITS card CWNOCLIP)",
                ctx.name, ctx.cwMeanNImage);
        }
        return;
    }
    log().info("patch {}: resumed from {} (weights, {} footprints and their decisions)", ctx.name, path,
               state.nFootprints);
}

/// Root: publish the decision checkpoint. Deferred (no agreement of its own): the other ranks
/// already stack their final tiles; a failure surfaces in the "final" stage's agreement.
void saveDecisions(PatchContext& ctx) {
    deferred(ctx, [&] {
        maybeInjectFailure("checkpoint");
        if (ctx.ckpt.dir.empty() || !ctx.isRoot()) {
            return;
        }
        const auto t0 = std::chrono::steady_clock::now();
        io::PatchState s;
        s.stage = "reduced";
        s.mode = ctx.settings.mode;
        for (const Warp& w : ctx.warps) {
            // comparewarp: the root's noData is the whole patch's (gathered by cw_compare).
            s.warps.push_back({w.visit, w.scale, w.weight, w.used, w.status, w.nClippedPixels,
                               w.nBigFootprints, w.checksum, w.clipped.spans(), w.templateWeight,
                               w.varianceFactor, w.noData.spans()});
        }
        s.nFootprints = ctx.result.nFootprints;
        s.nClippedFootprints = ctx.result.nClippedFootprints;
        s.psfSigma = ctx.detect.psfSigma;  // comparewarp: σ_m (cw_setup)
        s.psfSource = ctx.psfSource;
        s.decisions = ctx.decisions;
        s.cwMaxRadius = ctx.cwMaxRadius;
        s.cwMeanNImage = ctx.cwMeanNImage;
        s.cwRows = ctx.cwRows;
        s.cwEdge = ctx.cwEdge.spans();
        const std::string path = decisionCheckpointPath(ctx.ckpt.dir, ctx.name);
        io::writePatchCheckpoint(path, checkpointKey(ctx), s);
        std::error_code ec;
        log().info("patch {}: checkpoint {} ({}) in {:.2f} s", ctx.name, path,
                   geom::formatByteSize(static_cast<std::int64_t>(std::filesystem::file_size(path, ec))),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    });
}

}  // namespace safeclip::pipeline
