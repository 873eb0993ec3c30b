/// @file Driver.cpp  runPatch: the context of a patch and the loop over its mode's stages.
#include "safeclip/pipeline/Driver.h"

#include <algorithm>
#include <chrono>

#include "safeclip/kernel/Error.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/pipeline/Stages.h"

namespace safeclip::pipeline {

PatchContext::PatchContext(std::string patchName, const kernel::Box& patchBox,
                           const PatchSettings& patchSettings, const parallel::Comm* patchGroup,
                           CheckpointOptions checkpoints, std::string output)
    : settings(patchSettings),
      group(patchGroup),
      name(std::move(patchName)),
      box(patchBox),
      requireSameBox(patchBox.empty()),
      ckpt(std::move(checkpoints)),
      outPath(std::move(output)) {}

bool PatchContext::isRoot() const {
    return parallel::rankOf(group) == 0;
}

int PatchContext::rank() const {
    return parallel::rankOf(group);
}

std::vector<Warp*> PatchContext::usedWarps() {
    std::vector<Warp*> out;
    for (Warp& w : warps) {
        if (w.used) {
            out.push_back(&w);
        }
    }
    return out;
}

std::vector<float> PatchContext::usedWeights() {
    std::vector<float> out;
    for (const Warp* w : usedWarps()) {
        out.push_back(w->weight);
    }
    return out;
}

std::vector<std::size_t> PatchContext::myTiles() const {
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < tiles.tiles.size(); ++i) {
        if (tiles.owner[i] == rank()) {
            out.push_back(i);
        }
    }
    return out;
}

int detectionHalo(const kernel::DetectControl& ctrl) {
    return ctrl.kernelHalfWidth() + ctrl.growRadius() + std::max(0, ctrl.minPixels - 1);
}

double haloSigma(const kernel::DetectControl& configured,
                 const std::vector<std::optional<double>>& headerSigmas) {
    if (configured.psfSigma > 0) {
        return configured.psfSigma;
    }
    double sigma = 0;
    for (const auto& s : headerSigmas) {
        if (s && *s > sigma) {
            sigma = *s;
        }
    }
    return sigma;
}

std::string psfSigmaNeed(const std::string& mode, double configuredPsfSigma, bool psfMatchedCompanion) {
    if (mode == "comparewarp" && !psfMatchedCompanion) {
        return "coadd.mode = comparewarp PSF-matches each warp to a model PSF and needs its sigma";
    }
    if (mode == "safeclip" && !(configuredPsfSigma > 0)) {
        return "detection smooths with the coadd PSF made from the warps' PSF sigmas; set "
               "detect.psf_sigma (px) if the warps carry none";
    }
    return "";
}

int tileHalo(const kernel::DetectControl& configured, double sigma) {
    kernel::DetectControl dc = configured;
    dc.psfSigma = sigma;
    return detectionHalo(dc);
}

std::optional<geom::CosmicRayStage> cosmicRayStage(const PatchSettings& settings) {
    if (!settings.cosmicRays.detect) {
        return std::nullopt;
    }
    return geom::CosmicRayStage{settings.cosmicRays.cellSize, cosmicRayHalo(settings.cosmicRays.control),
                                settings.cosmicRays.control.nCrPixelMax};
}

const std::vector<StageDef>& modeStages(const std::string& mode) {
    // Plain weighted mean of the warps (no clipping, no detection).
    static const std::vector<StageDef> kMean = {
        {"open", openWarps},         {"budget", checkBudgetEarly}, {"cosmic_rays", findWarpCosmicRays},
        {"weights", measureWeights}, {"setup", planTiles},         {"final", finalStack},
        {"post", postProcess},       {"write", writeCoadd},
    };
    // SafeClip (spec §3-§8).
    static const std::vector<StageDef> kSafeClip = {
        {"open", openWarps},
        {"resume", resumeDecisions},
        {"budget", checkBudgetEarly},
        {"cosmic_rays", findWarpCosmicRays},  // also on --resume: the final stack needs its pixels
        {"weights", measureWeights, /*skipWhenResumed=*/true},
        {"detection", setupDetection},
        {"setup", planTiles},
        {"trial", trialStacks, true},
        {"reduce", decideClipping, true},
        {"checkpoint", saveDecisions, true},
        {"final", finalStack},
        {"post", postProcess},
        {"write", writeCoadd},
    };
    // CompareWarp (spec §10), with the decision checkpoint of the safeclip mode (its state: io::PatchState).
    static const std::vector<StageDef> kCompareWarp = {
        {"open", openWarps},
        {"resume", resumeDecisions},
        {"budget", checkBudgetEarly},
        {"cosmic_rays", findWarpCosmicRays},  // also on --resume: the final stack needs its pixels
        {"weights", measureWeights, /*skipWhenResumed=*/true},
        {"cw_setup", compareWarpSetup},  // on --resume: σ_m and the kernel radius from the checkpoint
        {"setup", planTiles},
        {"cw_stats", compareWarpStats, true},
        {"cw_compare", compareWarpCompare, true},
        {"cw_decide", compareWarpDecide, true},
        {"checkpoint", saveDecisions, true},
        {"final", finalStack},
        {"cw_edge", compareWarpEdge},
        {"post", postProcess},
        {"write", writeCoadd},
    };
    if (mode == "comparewarp") {
        return kCompareWarp;
    }
    if (mode == "mean") {
        return kMean;
    }
    if (mode == "safeclip") {
        return kSafeClip;
    }
    throw ConfigError("coadd.mode: unknown mode '" + mode + "' (expected mean|safeclip|comparewarp)");
}

bool modeHasStage(const std::string& mode, std::string_view stage) {
    const std::vector<StageDef>& stages = modeStages(mode);
    return std::any_of(stages.begin(), stages.end(), [&](const StageDef& s) { return stage == s.name; });
}

PatchResult runPatch(const std::string& name, const kernel::Box& box, const std::vector<WarpInput>& warps,
                     const PatchSettings& settings, const std::string& outPath, const parallel::Comm* group,
                     const CheckpointOptions& checkpoints) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<StageDef>& stages = modeStages(settings.mode);
    PatchContext ctx(name, box, settings, group, checkpoints, outPath);
    ctx.warps.resize(warps.size());
    for (std::size_t i = 0; i < warps.size(); ++i) {
        ctx.warps[i].input = warps[i];
    }
    ctx.result.name = name;
    ctx.result.outputPath = outPath;
    ctx.result.nWarps = static_cast<int>(warps.size());
    for (const StageDef& stage : stages) {
        if (stage.skipWhenResumed && ctx.resumed) {
            continue;
        }
        stage.run(ctx);
    }
    ctx.result.nTiles = static_cast<int>(ctx.tiles.tiles.size());
    ctx.result.tileSize = ctx.tiles.tileSize;
    ctx.result.halo = ctx.halo;
    ctx.result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return ctx.result;
}

}  // namespace safeclip::pipeline
