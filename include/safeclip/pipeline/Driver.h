#pragma once
/// @file Driver.h  Coadd one patch: run its mode's stages (Stages.h) over a rank group.
///
/// Data flow of one patch on R ranks (docs/ARCHITECTURE.md has the picture):
///  open     every rank opens every warp's header (the group root also scans pixels when asked);
///  weights  warp i is measured by group rank i mod R over its whole box (reads VARIANCE and MASK,
///           and the file's bytes for the crc32 and the all-NaN test), all-gathered; its
///           DETECTED components that reach the patch go to the root;
///  trial    per tile (tiles dealt to ranks by geom::planTiles): both trial stacks over tile+halo,
///           detection on the difference, pieces with additive per-warp counts; gathered to the root;
///  reduce   the root merges pieces into whole footprints (kernel::mergePieces), decides each once,
///           applies the big-footprint rule, and broadcasts every warp's CLIPPED spans;
///  final    per tile: the final stack; tiles are gathered to the root;
///  post, write  the root post-processes and writes the FITS atomically.
/// Each pixel is computed from the same inputs in the same order whatever the tiling, so the
/// output bytes do not depend on rank count, tile size or memory budget.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "safeclip/geom/MemoryBudget.h"
#include "safeclip/kernel/Box.h"
#include "safeclip/kernel/CosmicRays.h"
#include "safeclip/kernel/Detect.h"
#include "safeclip/kernel/PsfMatch.h"
#include "safeclip/parallel/Comm.h"
#include "safeclip/pipeline/PatchResult.h"
#include "safeclip/pipeline/Settings.h"

namespace safeclip::pipeline {

/// Coadd one patch and write `outPath` atomically (on the group's rank 0).
/// @param box the patch box; an empty box means "the warps' common box" (all warps must agree).
/// @param group ranks that share this patch (collective over it); nullptr = serial, no MPI.
/// @returns the result (complete on group rank 0).
/// @throws InputError, ConfigError, OutputError (on every rank of the group alike)
PatchResult runPatch(const std::string& name, const kernel::Box& box, const std::vector<WarpInput>& warps,
                     const PatchSettings& settings, const std::string& outPath, const parallel::Comm* group,
                     const CheckpointOptions& checkpoints);

/// Halo around a tile for detection to give exactly the whole-patch footprints inside the tile:
/// the smoothing radius r, the growth radius, and minPixels-1 so that the minPixels cut sees
/// enough of every component that reaches the tile.
int detectionHalo(const kernel::DetectControl& ctrl);

/// The sigma of the tile halo: `configured.psfSigma` (detect.psf_sigma) when > 0, else the largest
/// PSFSIGMA/FWHM of the warp headers that open (0 when none is known). It is >= the adaptive-moment
/// mixture sigma the detection uses (kernel::mixtureDeterminantRadius), so the halo always suffices, and
/// `safeclip plan` can compute it from the headers alone: plan and run agree on the halo and so on the tile
/// plan.
double haloSigma(const kernel::DetectControl& configured,
                 const std::vector<std::optional<double>>& headerSigmas);
/// detectionHalo of `configured` with psfSigma = sigma.
int tileHalo(const kernel::DetectControl& configured, double sigma);

/// The halo around each cell of the "cosmic_rays" stage (CosmicRays.cpp).
int cosmicRayHalo(const kernel::CosmicRayControl& ctrl);
/// The "cosmic_rays" stage for the memory model: its halo and nCrPixelMax; nullopt when it is off.
std::optional<geom::CosmicRayStage> cosmicRayStage(const PatchSettings& settings);
/// One used warp's PSF as coadd.mode = comparewarp needs it (CompareWarp.cpp).
struct CompareWarpPsf {
    std::string path;         ///< the direct warp (for messages)
    double sigma = 0;         ///< PSF sigma, px: PSFSIGMA/FWHM of the companion when it has one
    bool psfMatched = false;  ///< read from its PSF-matched companion: not convolved here
};

/// What "cw_setup" derives from the used warps' PSFs, and `safeclip plan` (and the "budget" stage)
/// from the warp headers, so that plan and run agree on the halo and the tile plan.
struct CompareWarpGeometry {
    double modelSigma = 0;                        ///< σ_m: comparewarp.model_psf_sigma, or the largest σ
    int maxRadius = 0;                            ///< largest half-width of the kernels applied here
    int halo = 0;                                 ///< the tile halo (CompareWarp.cpp, cw_setup)
    std::vector<kernel::MatchingKernel> kernels;  ///< per CompareWarpPsf (identity for a companion)
    kernel::DetectControl detect;                 ///< detection on each warp − template
    kernel::DetectControl templateDetect;         ///< detectTemplate (on the root, whole patch)
    bool detectTemplate = false;                  ///< comparewarp.preserve_contained_by_source
};

/// comparewarp's model PSF, matching kernels, detection controls and tile halo. `modelSigma`, when
/// given, replaces the configured/derived σ_m (a resumed patch keeps its checkpoint's).
/// @throws ConfigError when the model sigma is smaller than a warp's sigma (no deconvolution).
CompareWarpGeometry compareWarpGeometry(const PatchSettings& settings,
                                        const std::vector<CompareWarpPsf>& psfs,
                                        std::optional<double> modelSigma = std::nullopt);

/// "Nothing can be clipped" (spec §10 step 8): the temporal criterion's E is 0 at the patch's mean
/// approximate nImage (N̄ < 2.5 with the defaults; derived from the [comparewarp] keys).
bool compareWarpNothingClippable(const CompareWarpSettings& cs, double meanNImage);

/// The comparewarp stages for the memory model (geom::patchBudget): the geometry's kernel radius,
/// the root's template detection, and per warp in input order whether it is read from a
/// PSF-matched companion.
geom::CompareWarpStage compareWarpStage(const CompareWarpGeometry& geometry, std::vector<bool> psfMatched);

/// Why a warp's PSF width (PSFSIGMA/FWHM card) is needed by a coadd in `mode` with detect.psf_sigma =
/// `configuredPsfSigma`, for `safeclip validate` and the "open" stage's checks; "" when it is not
/// (mean mode; safeclip mode with detect.psf_sigma set; a comparewarp warp read from its
/// PSF-matched companion, whose own card cw_setup checks).
std::string psfSigmaNeed(const std::string& mode, double configuredPsfSigma, bool psfMatchedCompanion);

/// True when the stage list of `mode` has a stage called `stage` (e.g. "reduce": the mode clips).
bool modeHasStage(const std::string& mode, std::string_view stage);

}  // namespace safeclip::pipeline
