#pragma once
/// @file Settings.h  What the patch pipeline needs to know from the configuration, as validated
/// kernel controls and plain values. app::makePatchSettings (src/app/PatchCoadd.cpp) is the only
/// place that turns configuration keys into these; the pipeline never sees a key.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "safeclip/kernel/ClipDecision.h"
#include "safeclip/kernel/CosmicRays.h"
#include "safeclip/kernel/Detect.h"
#include "safeclip/kernel/Image.h"
#include "safeclip/kernel/Interp.h"
#include "safeclip/kernel/Stack.h"

namespace safeclip::pipeline {

/// Mask bits used by the pipeline, resolved by the "open" stage against the patch's mask
/// dictionary (the canonical planes plus every plane the warps' MP_* cards name).
struct MaskBits {
    kernel::MaskPixel bad = 0;  ///< B (stack.bad_mask_planes)
    kernel::MaskPixel det = 0;  ///< DETECTED | DETECTED_NEGATIVE
    kernel::MaskPixel clipped = 0;
    kernel::MaskPixel rejected = 0;
    kernel::MaskPixel sensorEdge = 0;
    kernel::MaskPixel inexactPsf = 0;
    kernel::MaskPixel noData = 0;
    kernel::MaskPixel edge = 0;
    kernel::MaskPixel intrp = 0;
    kernel::MaskPixel remove = 0;  ///< stack.remove_mask_planes
    kernel::MaskPixel cr = 0;      ///< CR: where the "cosmic_rays" stage marks the pixels it finds
};

/// The optional "cosmic_rays" warp stage (cosmic_rays.*): kernel::findCosmicRays on each warp
/// before any stack; the pixels it finds get the CR plane, which is then a bad plane everywhere.
struct CosmicRaySettings {
    bool detect = false;  ///< cosmic_rays.detect
    /// cosmic_rays.* with upstream's names; keepCRs is always true here (warps are not repaired:
    /// their CR pixels are left out of every stack instead).
    kernel::CosmicRayControl control;
    double psfSigma = 0;    ///< cosmic_rays.psf_sigma (0 = each warp's PSFSIGMA/FWHM card)
    int cellSize = 1024;    ///< cosmic_rays.cell_size: the warp is searched in cells of this size
    double background = 0;  ///< cosmic_rays.background (warps are background-subtracted)
};

/// coadd.mode = "comparewarp" (spec §10; the [comparewarp] config section, upstream
/// CompareWarpAssembleCoaddConfig names in the comments).
struct CompareWarpSettings {
    /// σ_m of the model PSF the warps are matched to, px (modelPsf); 0 = the largest warp PSFSIGMA.
    double modelPsfSigma = 0;
    double templateSigmaClip = 2.5;       ///< assembleStaticSkyModel.sigmaClip
    int templateClipIter = 3;             ///< assembleStaticSkyModel.clipIter
    double threshold = 5.0;               ///< detect.thresholdValue (modern drp_tasks: 7.5)
    double nSigmaToGrow = 0.4;            ///< detect.nSigmaToGrow
    int minPixels = 4;                    ///< detect.minPixels
    int maxNumEpochs = 2;                 ///< maxNumEpochs
    double maxFractionEpochsLow = 0.4;    ///< maxFractionEpochsLow
    double maxFractionEpochsHigh = 0.03;  ///< maxFractionEpochsHigh
    double spatialThreshold = 0.5;        ///< spatialThreshold
    bool scaleWarpVariance = true;        ///< doScaleWarpVariance
    bool prefilter = true;                ///< doPrefilterArtifacts
    double prefilterRatio = 0.05;         ///< prefilterArtifactsRatio
    /// prefilterArtifactsMaskPlanes (modern drp_tasks: NO_DATA, BAD, SUSPECT)
    std::vector<std::string> prefilterMaskPlanes{"NO_DATA", "BAD", "SAT", "SUSPECT"};
    bool preserveContainedBySource = true;  ///< doPreserveContainedBySource
};

/// One patch's settings (the same on every rank).
struct PatchSettings {
    std::string mode = "safeclip";  ///< coadd.mode: a key of pipeline::modeStages
    /// input.on_bad_warp = skip: leave out a warp that cannot be used (unreadable, malformed,
    /// invalid header, unusable weight) instead of stopping with exit 3.
    bool skipBadWarps = false;
    /// Leave out, with a warning, the warps upstream's prepareInputs skips (an all-NaN image, a
    /// non-finite weight), whatever skipBadWarps says. false only with input.on_bad_warp = strict.
    bool skipEmptyWarps = true;
    bool validatePixels = false;             ///< input.validate_pixels
    bool allowMixedFilters = false;          ///< input.allow_mixed_filters
    std::int64_t memoryBudget = 0;           ///< memory.max_per_rank, bytes
    int tileSize = 0;                        ///< tile.size (0 = automatic)
    double zeroPoint = 27.0;                 ///< stack.zero_point (AB mag of the coadd's unit)
    double sigmaClip = 3.0;                  ///< stack.sigma_clip (also the weights' unweighted MEANCLIP)
    int clipIter = 2;                        ///< stack.clip_iter
    bool calcErrorFromInputVariance = true;  ///< stack.calc_error_from_input_variance
    /// Mask planes by name; their bits depend on the warps' MP_* cards, so the "open" stage
    /// resolves them (PatchContext::bits and the stack controls).
    std::vector<std::string> badMaskPlanes;     ///< stack.bad_mask_planes
    std::vector<std::string> removeMaskPlanes;  ///< stack.remove_mask_planes
    std::vector<std::pair<std::string, double>>
        maskPropagationThresholds;  ///< stack.mask_propagation_thresholds
    kernel::ClipControl clipRules;
    kernel::DetectControl detect;  ///< psfSigma = detect.psf_sigma (0 = from the warps' headers)
    kernel::InterpControl interp;
    CosmicRaySettings cosmicRays;
    CompareWarpSettings compareWarp;         ///< [comparewarp] (used only by coadd.mode = comparewarp)
    std::vector<std::string> scienceConfig;  ///< the pixel-affecting "key = value" lines (CONFIG table)
    std::string scienceConfigHash;           ///< their hash (SCCFGHSH; ties checkpoints to the run)
    /// Called on the group root after the coadd is published (inside the agreed "write" stage),
    /// e.g. the QA picture of the app layer. May be empty.
    std::function<void(const std::string& patch, const std::string& fitsPath)> afterWrite;
};

/// One input warp of a patch.
struct WarpInput {
    /// (A constructor rather than an aggregate: `{visit, path}` leaves the rest at their defaults
    /// without -Wmissing-field-initializers.)
    WarpInput(std::int64_t visit_ = -1, std::string path_ = {}, std::string psfMatchedPath_ = {},
              std::optional<double> zeroPoint_ = std::nullopt)
        : visit(visit_),
          path(std::move(path_)),
          psfMatchedPath(std::move(psfMatchedPath_)),
          zeroPoint(zeroPoint_) {}
    std::int64_t visit = -1;  ///< -1: take VISIT/EXPID from the header, else the warp's position
    std::string path;
    /// coadd.mode = comparewarp: its PSF-matched companion (LSST's psfMatchedWarp; the manifest's
    /// "psf_matched"), read instead of PSF-matching the warp. "" = match the warp itself.
    std::string psfMatchedPath;
    /// The manifest's "zero_point" (AB), used instead of the warp's FLUXMAG0/PhotoCalib.
    std::optional<double> zeroPoint;
};

/// Checkpointing of a patch (`safeclip run`): the stage-R state (weights, decisions, CLIPPED
/// spans) and finished final tiles go to HDF5 files under `dir`, published atomically.
struct CheckpointOptions {
    std::string dir;            ///< "" = no checkpoints
    bool resume = false;        ///< reuse valid checkpoints (refuse ones from another config or input list)
    bool restart = false;       ///< ignore and replace checkpoints of another config or input list
    double tileInterval = 0.0;  ///< seconds of final-stack work between tile checkpoints (0 = every tile)
};

}  // namespace safeclip::pipeline
