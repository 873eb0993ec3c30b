#pragma once
/// @file PatchContext.h  The state of one patch as it moves through the stages of its mode
/// (pipeline/Stages.h). Grouped by the stage that produces each part; a stage reads only what the
/// stages before it produced (Stages.h says what each one reads and writes).
///
/// Coordinates are PARENT pixels of the patch's sky grid throughout.
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "safeclip/geom/Plan.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/ClipDecision.h"
#include "safeclip/kernel/DecisionTable.h"
#include "safeclip/kernel/Detect.h"
#include "safeclip/kernel/FootprintMerge.h"
#include "safeclip/kernel/Image.h"
#include "safeclip/kernel/MaskDict.h"
#include "safeclip/kernel/PsfMatch.h"
#include "safeclip/kernel/SpanSet.h"
#include "safeclip/kernel/Stack.h"
#include "safeclip/parallel/Comm.h"
#include "safeclip/parallel/TileGather.h"
#include "safeclip/pipeline/PatchResult.h"
#include "safeclip/pipeline/Settings.h"

namespace safeclip::pipeline {

/// One input warp and everything learnt about it.
struct Warp {
    WarpInput input;
    std::int64_t visit = -1;
    std::unique_ptr<io::WarpReader> reader;
    float scale = 1.0F;   ///< s_i (float32, as upstream)
    float weight = 0.0F;  ///< w_i
    bool used = false;
    std::string status;  ///< "used" or "skipped: reason"
    kernel::SpanSet
        detAll;  ///< root, after "weights": DETECTED components (raw mask, whole warp) reaching the patch
    kernel::SpanSet clipped;  ///< CLIPPED_i (footprints + big footprints)
    std::int64_t nClippedPixels = 0;
    std::int64_t nBigFootprints = 0;
    std::int64_t nUsedPixels = 0;     ///< pixels this warp contributed to the final stack
    kernel::SpanSet cosmicRays;       ///< "cosmic_rays": CR pixels found in the warp (whole warp box)
    std::int64_t nCosmicRays = 0;     ///< "cosmic_rays": how many CRs (each counted once)
    std::string checksum;             ///< "crc32:..." of the file
    std::int64_t fileSize = -1;       ///< "open": the file's size in bytes when it was opened (-1: no stat)
    std::int64_t mtimeNs = -1;        ///< "open": its modification time then (ns since the epoch)
    std::int64_t companionSize = -1;  ///< "open": the PSF-matched companion's size (-1: none / no stat)
    std::int64_t companionMtimeNs = -1;  ///< "open": the companion's modification time
    // comparewarp mode only (CompareWarp.cpp):
    kernel::MatchingKernel matchKernel;  ///< "cw_setup": its Gaussian PSF-matching kernel
    /// "cw_setup": the PSF-matched companion (input.psfMatchedPath), read instead of matching
    /// (matchKernel is then the identity); null = the warp is matched to the model PSF here.
    std::unique_ptr<io::WarpReader> matchedReader;
    float templateWeight = 0.0F;  ///< "cw_stats": its weight in the template
    double varianceFactor = 1.0;  ///< "cw_stats": ScaleVariance factor (1 when off or failed)
    /// "cw_compare": pixels where the warp − template difference is not finite (the PSF-matched
    /// warp's rim excepted): painted NO_DATA by "final" (spec §10 step 9). This rank's tiles' on the
    /// other ranks, the whole patch on the root (for the decision checkpoint) and, after a resume,
    /// on every rank.
    kernel::SpanSet noData;
};

struct PatchContext {
    PatchContext(std::string patchName, const kernel::Box& patchBox, const PatchSettings& patchSettings,
                 const parallel::Comm* patchGroup, CheckpointOptions checkpoints, std::string output);

    // ---- given ---------------------------------------------------------------------------------
    const PatchSettings& settings;
    const parallel::Comm* group = nullptr;  ///< ranks sharing this patch; nullptr = serial
    std::string name;
    kernel::Box box;              ///< the patch box (set from the warps by "open" when not given)
    bool requireSameBox = false;  ///< no patch box given: every warp must have the first one's box
    CheckpointOptions ckpt;
    std::string outPath;
    kernel::MaskDict dict = kernel::MaskDict::canonical();

    // ---- open (OpenWarps.cpp), then weights (Weights.cpp) ---------------------------------------
    std::vector<Warp> warps;
    std::vector<std::optional<double>> headerPsfSigmas;  ///< of every warp that opened (for haloSigma)
    std::vector<std::string> wcsCards;                   ///< of the first used warp
    MaskBits bits;                   ///< the settings' planes in `dict` (after every warp conformed)
    kernel::StackControl meanCtrl;   ///< trial MEAN (bad planes B)
    kernel::StackControl clipCtrl;   ///< trial MEANCLIP (bad planes B)
    kernel::StackControl finalCtrl;  ///< final MEAN (bad planes B | CLIPPED)
    std::string filter;

    // ---- resume (PatchCheckpoint.cpp) -----------------------------------------------------------
    bool resumed =
        false;  ///< weights and decisions (comparewarp: and its statistics) came from the decision checkpoint

    // ---- detection setup and tile plan (TilePlan.cpp) -------------------------------------------
    kernel::DetectControl detect;  ///< with the patch's psfSigma
    std::string psfSource;         ///< where detect.psfSigma came from
    int halo = 0;                  ///< detection halo around each tile (0 in mean mode)
    bool clipStages = false;       ///< the mode detects and clips: the coadd records PSFSIGMA and decisions
    geom::TilePlan tiles;

    // ---- trial stacks (TrialStacks.cpp) -> decisions (Decide.cpp) -------------------------------
    std::vector<kernel::FootprintPiece> pieces;  ///< root: every tile's footprint pieces
    kernel::DecisionTable decisions;             ///< root (and every rank after a resume)

    // ---- comparewarp mode (CompareWarp.cpp): cw_setup, cw_stats, cw_compare, cw_decide ----------
    double cwModelSigma = 0;                                    ///< σ_m of the model PSF
    int cwMaxRadius = 0;                                        ///< largest matching-kernel half-width
    kernel::DetectControl cwDetect;                             ///< detection on each warp − template
    kernel::DetectControl cwTemplateDetect;                     ///< detectTemplate (simplified)
    std::vector<std::vector<kernel::FootprintPiece>> cwPieces;  ///< root: per used warp
    std::vector<kernel::SpanSet> cwInvalid;      ///< root: per used warp, not in approximate nImage
    kernel::SpanSet cwTemplateFootprints;        ///< root: union of the template's footprints
    kernel::SpanSet cwEdge;                      ///< root: union of the PSF-matched warps' EDGE pixels
    std::vector<kernel::CompareWarpRow> cwRows;  ///< root: one row per candidate (FOOTPRINTS)
    double cwMeanNImage = 0;  ///< "cw_decide" (every rank after a resume): mean approximate nImage

    // ---- final stack (FinalStack.cpp) -> post-processing and output ----------------------------
    kernel::MaskedImage coadd;            ///< root: the whole patch
    kernel::ImageU16 nImage;              ///< root
    std::vector<std::int64_t> usedLocal;  ///< per warp: pixels used by this rank's final tiles

    PatchResult result;  ///< complete on the group root at the end

    /// A failure of a stage that does not agree by itself (the root's decision checkpoint,
    /// written while the other ranks already stack): rethrown by the next guarded stage.
    std::exception_ptr deferred;

    [[nodiscard]] bool isRoot() const;
    [[nodiscard]] int rank() const;  ///< within the group
    [[nodiscard]] std::vector<Warp*> usedWarps();
    [[nodiscard]] std::vector<float> usedWeights();
    /// Indexes of the tiles this rank owns.
    [[nodiscard]] std::vector<std::size_t> myTiles() const;
    /// After a stage that may skip warps: InputError "patch NAME: no usable warps (all N skipped:
    /// FILE: REASON; ...)" when none is left (the same on every rank: statuses are agreed).
    void requireUsedWarps() const;
    /// Apply input.on_bad_warp: throw InputError(why), or mark the warp skipped and warn.
    /// `upstreamSkips`: a case upstream's prepareInputs skips (settings.skipEmptyWarps decides).
    void failWarp(Warp& w, const std::string& why, bool upstreamSkips = false) const;
};

}  // namespace safeclip::pipeline
