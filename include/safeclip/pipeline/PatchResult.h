#pragma once
/// @file PatchResult.h  What happened to one patch: returned by the pipeline, gathered to rank 0
/// by `safeclip run` and written to report.json. The fields are described once (`fields`); the
/// Boost.MPI message and the report's patch entry are made from that description.
#include <cstdint>
#include <string>
#include <vector>

#include "safeclip/kernel/DecisionTable.h"
#include "safeclip/parallel/Serialization.h"  // std::string and std::vector members

namespace safeclip::pipeline {

struct PatchResult {
    std::int64_t index = 0;  ///< position in the manifest (`run`)
    std::string name;
    std::string status;  ///< "done", "skipped", "failed" (`run`)
    std::string error;
    std::string outputPath;
    int rank = 0;  ///< world rank of the group root that reported it
    int nWarps = 0;
    int nUsed = 0;
    std::vector<std::string> skippedWarps;  ///< "file: reason" of each warp left out (as in INPUTS)
    std::int64_t nFootprints = 0;           ///< difference-image footprints
    std::int64_t nClippedFootprints = 0;    ///< footprints clipped in at least one warp
    std::int64_t nBigFootprints = 0;
    std::int64_t nCosmicRayPixels = 0;     ///< CR pixels the "cosmic_rays" stage found (0 when off)
    std::int64_t nSingle = 0;              ///< footprints clipped by the single rule (§6.3.4a)
    std::int64_t nSingleOnly = 0;          ///< by the only-candidate rule (§6.3.3)
    std::int64_t nDouble = 0;              ///< by the double rule (§6.3.4b)
    std::int64_t nClippedWarpPixels = 0;   ///< Σ over warps of CLIPPED pixels
    std::int64_t nCoaddClippedPixels = 0;  ///< coadd pixels with CLIPPED
    /// comparewarp: the temporal criterion's E is 0 at the patch's mean approximate nImage, so no
    /// artefact can be clipped where the coverage is the mean (spec §10 step 8); false otherwise
    /// and in the other modes
    bool nothingClippable = false;
    int nTiles = 0;
    int tileSize = 0;
    int halo = 0;                    ///< detection halo of the tiles (0 in mean mode)
    std::int64_t warpBytesRead = 0;  ///< warp bytes read for this patch, summed over its group (`run`)
    double seconds = 0;
    /// where the figures come from: "run" (coadded by the run segment `segment`), "report" (finished
    /// earlier: copied from the previous report.json), "output" (finished earlier: read from the
    /// output's INPUTS and FOOTPRINTS tables; tile, timing and coadd-pixel figures are 0), "" (failed)
    std::string figuresFrom;
    std::int64_t segment = -1;  ///< index in report.json "segments" of the run that coadded it (-1: unknown)

    /// report.json keys ("a.b" = key b of object a); checkpoint names are unused here.
    template <class Row, class V>
    static void fields(Row& r, V&& v) {
        using kernel::FieldName;
        v(FieldName{"index", "", ""}, r.index);
        v(FieldName{"name", "", ""}, r.name);
        v(FieldName{"status", "", ""}, r.status);
        v(FieldName{"error", "", ""}, r.error);
        v(FieldName{"output", "", ""}, r.outputPath);
        v(FieldName{"rank", "", ""}, r.rank);
        v(FieldName{"warps", "", ""}, r.nWarps);
        v(FieldName{"warps_used", "", ""}, r.nUsed);
        v(FieldName{"skipped_warps", "", ""}, r.skippedWarps);
        v(FieldName{"footprints", "", ""}, r.nFootprints);
        v(FieldName{"footprints_clipped", "", ""}, r.nClippedFootprints);
        v(FieldName{"big_footprints", "", ""}, r.nBigFootprints);
        v(FieldName{"cosmic_ray_pixels", "", ""}, r.nCosmicRayPixels);
        v(FieldName{"clipped_by_rule.single", "", ""}, r.nSingle);
        v(FieldName{"clipped_by_rule.single_only_candidate", "", ""}, r.nSingleOnly);
        v(FieldName{"clipped_by_rule.double", "", ""}, r.nDouble);
        v(FieldName{"clipped_warp_pixels", "", ""}, r.nClippedWarpPixels);
        v(FieldName{"clipped_coadd_pixels", "", ""}, r.nCoaddClippedPixels);
        v(FieldName{"nothing_can_be_clipped", "", ""}, r.nothingClippable);
        v(FieldName{"tiles", "", ""}, r.nTiles);
        v(FieldName{"tile_size", "", ""}, r.tileSize);
        v(FieldName{"halo", "", ""}, r.halo);
        v(FieldName{"warp_bytes_read", "", ""}, r.warpBytesRead);
        v(FieldName{"seconds", "", ""}, r.seconds);
        v(FieldName{"figures_from", "", ""}, r.figuresFrom);
        v(FieldName{"segment", "", ""}, r.segment);
    }
    template <class Archive>
    void serialize(Archive& ar, const unsigned int /*version*/) {
        fields(*this, [&ar](const kernel::FieldName&, auto& member) { ar& member; });
    }
};

}  // namespace safeclip::pipeline
