/// @file PatchCheckpoint.cpp  Stages "resume" and "checkpoint" (the decision checkpoint of a
/// patch) and the names of its checkpoint files.
#include "safeclip/pipeline/PatchCheckpoint.h"

#include <chrono>
#include <filesystem>

#include "safeclip/geom/Plan.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/parallel/Logging.h"
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
    for (const Warp& w : ctx.warps) {
        key.inputs.push_back(io::fileFingerprint(w.input.path));
    }
    key.inputHash = io::hashStrings(key.inputs);
    return key;
}

void removeCheckpoints(const PatchContext& ctx) {
    if (ctx.ckpt.dir.empty()) {
        return;
    }
    std::error_code ec;
    std::filesystem::remove(decisionCheckpointPath(ctx.ckpt.dir, ctx.name), ec);
    std::filesystem::remove_all(tileCheckpointDir(ctx.ckpt.dir, ctx.name), ec);
}

/// With --resume: the root reads the decision checkpoint and broadcasts it. A checkpoint of another
/// configuration or input list is refused (ConfigError) unless --restart; an invalid one is
/// reported and recomputed.
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
        const io::CheckpointRead r = io::readPatchCheckpoint(path, checkpointKey(ctx));
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
    }
    ctx.result.nFootprints = state.nFootprints;
    ctx.result.nClippedFootprints = state.nClippedFootprints;
    ctx.decisions = std::move(state.decisions);
    ctx.resumed = true;
    if (ctx.isRoot()) {
        log().info("patch {}: resumed from {} (weights, {} footprints and their decisions)", ctx.name, path,
                   state.nFootprints);
    }
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
        for (const Warp& w : ctx.warps) {
            s.warps.push_back({w.visit, w.scale, w.weight, w.used, w.status, w.nClippedPixels,
                               w.nBigFootprints, w.checksum, w.clipped.spans()});
        }
        s.nFootprints = ctx.result.nFootprints;
        s.nClippedFootprints = ctx.result.nClippedFootprints;
        s.psfSigma = ctx.detect.psfSigma;
        s.psfSource = ctx.psfSource;
        s.decisions = ctx.decisions;
        const std::string path = decisionCheckpointPath(ctx.ckpt.dir, ctx.name);
        io::writePatchCheckpoint(path, checkpointKey(ctx), s);
        std::error_code ec;
        log().info("patch {}: checkpoint {} ({}) in {:.2f} s", ctx.name, path,
                   geom::formatByteSize(static_cast<std::int64_t>(std::filesystem::file_size(path, ec))),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    });
}

}  // namespace safeclip::pipeline
