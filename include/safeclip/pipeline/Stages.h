#pragma once
/// @file Stages.h  The stages of the patch pipeline and the modes that list them.
///
/// A stage is a function of the patch context, collective over the patch's group: every rank of
/// the group calls it. Its rank-local work runs inside pipeline::guarded (Guard.h), which ends
/// with an agreement, so a failure on one rank never leaves the others in a collective. A mode is
/// a list of stages (modeStages in Driver.cpp); pipeline::runPatch (Driver.h) runs the list. Adding a stage
/// is a new file with one function plus one line in a mode list (modeStages in Driver.cpp) and its source in
/// CMakeLists.txt.
///
/// Stage (file)                    reads                          writes
/// open (OpenWarps.cpp,            inputs, settings               warps, box, dict, headerPsfSigmas,
///   MaskPlanes.cpp)                                                wcsCards, filter, bits, stack controls
/// resume (PatchCheckpoint.cpp)    warps, checkpoint file         warps' weights/CLIPPED, decisions, resumed
///                                                                (comparewarp: also warps' templateWeight,
///                                                                varianceFactor, noData; cwModelSigma,
///                                                                cwMaxRadius, cwMeanNImage; root: cwRows,
///                                                                cwEdge)
/// budget (TilePlan.cpp)           headers, budget                (checks only: fails before any read)
/// cosmic_rays (CosmicRays.cpp)    warps (all planes; optional)   warps' cosmicRays, nCosmicRays, used
/// weights (Weights.cpp)           warps (VARIANCE, MASK, bytes)  warps' weight, checksum, used, detAll
/// (root) detection (TilePlan.cpp)        warps' PSF cards, weights      detect, psfSource, halo, clipStages
/// setup (TilePlan.cpp)            box, halo, budget              tiles
/// trial (TrialStacks.cpp)         warps (all planes), tiles      pieces (root)
/// reduce (Decide.cpp)             pieces, detAll (root)          decisions, warps' CLIPPED (all ranks)
/// checkpoint (PatchCheckpoint.cpp) decisions, warps (root)       <patch>.reduced.h5 (both modes that clip)
/// final (FinalStack.cpp)          warps, CLIPPED, tiles          coadd, nImage (root), warps' nUsedPixels
/// post (PostProcess.cpp)          coadd (root)                   coadd masks/variance, result counts
/// write (CoaddOutput.cpp)         everything (root)              <patch>.fits; checkpoints removed
/// comparewarp mode (CompareWarp.cpp, spec §10; also resume, checkpoint):
/// cw_setup                        warps' PSF cards               warps' matchKernel, cwModelSigma, halo
///                                 (resumed: cwModelSigma, cwMaxRadius)
/// cw_stats                        warps (whole, all planes)      warps' templateWeight, varianceFactor
/// cw_compare                      warps (all planes), tiles      cwPieces, cwInvalid, cwTemplateFootprints,
///                                                                cwEdge (root); warps' noData (own tiles;
///                                                                root: whole patch)
/// cw_decide                       cw* (root)                     cwRows, cwMeanNImage (root), warps' CLIPPED
///                                                                (all ranks)
/// cw_edge                         coadd, cwEdge (root)           coadd SENSOR_EDGE | INEXACT_PSF
#include <string>
#include <vector>

#include "safeclip/pipeline/PatchContext.h"

namespace safeclip::pipeline {

using StageFn = void (*)(PatchContext&);

struct StageDef {
    const char* name;
    StageFn run;
    bool skipWhenResumed = false;  ///< its results come from the decision checkpoint on --resume
};

/// The stage list of a mode ("mean", "safeclip", "comparewarp"). @throws ConfigError for an unknown mode
const std::vector<StageDef>& modeStages(const std::string& mode);

void openWarps(PatchContext& ctx);
/// Part of "open" (MaskPlanes.cpp): ctx.bits and the stack controls from the settings' plane names
/// and the patch's dictionary. @throws ConfigError for a bad plane no dictionary knows
void resolveMaskPlanes(PatchContext& ctx);
void resumeDecisions(PatchContext& ctx);
/// Optional (cosmic_rays.detect; a no-op when off): each warp's cosmic rays (CosmicRays.cpp).
void findWarpCosmicRays(PatchContext& ctx);
/// OR `crBit` into `mask` (row-major over `chunk`) where the "cosmic_rays" stage found CR pixels of
/// `w`. Every stage that reads a warp's MASK calls it (nothing to do when the stage is off).
void paintCosmicRays(const Warp& w, const kernel::Box& chunk, kernel::MaskPixel* mask,
                     kernel::MaskPixel crBit);
/// "budget" (TilePlan.cpp): the memory model of the plan `safeclip plan` makes, checked before any
/// pixel is read. @throws ConfigError naming the smallest budget that works
void checkBudgetEarly(PatchContext& ctx);
void measureWeights(PatchContext& ctx);
void setupDetection(PatchContext& ctx);
void planTiles(PatchContext& ctx);
void trialStacks(PatchContext& ctx);
void decideClipping(PatchContext& ctx);
void saveDecisions(PatchContext& ctx);
void finalStack(PatchContext& ctx);
void postProcess(PatchContext& ctx);
/// comparewarp mode (CompareWarp.cpp).
void compareWarpSetup(PatchContext& ctx);
void compareWarpStats(PatchContext& ctx);
void compareWarpCompare(PatchContext& ctx);
void compareWarpDecide(PatchContext& ctx);
void compareWarpEdge(PatchContext& ctx);
void writeCoadd(PatchContext& ctx);

}  // namespace safeclip::pipeline
