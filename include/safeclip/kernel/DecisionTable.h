#pragma once
/// @file DecisionTable.h  The record of SafeClip's decisions as row types: one row per
/// difference-image footprint, one per clip candidate, one per CLIPPED span.
///
/// Each row type describes its fields once, in `fields(row, visit)`: the visitor is called with
/// a FieldName (the FITS column, the HDF5 checkpoint member or dataset, the unit) and a reference
/// to the member. Every copy of a decision record is made from that description: Boost.MPI
/// messages (`serialize`), the HDF5 checkpoint (io/Checkpoint.cpp), the coadd's FITS tables
/// (io::rowsToTable) and report.json (io::rowToJson). A field added to a row reaches all of them.
#include <cstdint>
#include <string>
#include <vector>

namespace safeclip::kernel {

/// The names of one field in each product it appears in.
struct FieldName {
    const char* column;      ///< FITS column / report.json key ("a.b" = nested object)
    const char* checkpoint;  ///< HDF5 compound member or dataset name
    const char* unit;        ///< FITS TUNIT ("" = none)
};

/// Apply `v(name, member)` to every field of `row` (const or not), in order.
#define SAFECLIP_ROW_SERIALIZE                                                \
    template <class Archive>                                                  \
    void serialize(Archive& ar, const unsigned int /*version*/) {             \
        fields(*this, [&ar](const FieldName&, auto& member) { ar& member; }); \
    }

/// One footprint of the difference image and its decision (the coadd's FOOTPRINTS table).
struct FootprintRow {
    std::int64_t id = 0;
    std::int64_t x0 = 0;  ///< bounding box, inclusive, PARENT pixels
    std::int64_t y0 = 0;
    std::int64_t x1 = 0;
    std::int64_t y1 = 0;
    std::int64_t area = 0;
    std::string rule;           ///< kernel::toString(ClipRule)
    std::string reason;         ///< why it was kept ("" when clipped)
    std::string clippedVisits;  ///< comma-separated visits it was clipped in

    template <class Row, class V>
    static void fields(Row& r, V&& v) {
        v(FieldName{"id", "id", ""}, r.id);
        v(FieldName{"bbox_x0", "x0", "pixel"}, r.x0);
        v(FieldName{"bbox_y0", "y0", "pixel"}, r.y0);
        v(FieldName{"bbox_x1", "x1", "pixel"}, r.x1);
        v(FieldName{"bbox_y1", "y1", "pixel"}, r.y1);
        v(FieldName{"area", "area", "pixel"}, r.area);
        v(FieldName{"rule", "fp_rule", ""}, r.rule);
        v(FieldName{"reason", "fp_reason", ""}, r.reason);
        v(FieldName{"clipped_visits", "fp_clipped", ""}, r.clippedVisits);
    }
    SAFECLIP_ROW_SERIALIZE
    bool operator==(const FootprintRow&) const = default;
};

/// One warp that was a clip candidate for a footprint (the coadd's CANDIDATES table).
struct CandidateRow {
    std::int64_t footprintId = 0;
    std::int64_t visit = 0;
    std::int64_t det = 0;  ///< footprint pixels DETECTED (and not bad) in the warp
    std::int64_t ign = 0;  ///< footprint pixels bad in the warp
    double fraction = 0;   ///< det / (nPix - ign)
    std::int64_t clipped = 0;

    template <class Row, class V>
    static void fields(Row& r, V&& v) {
        v(FieldName{"footprint_id", "footprint_id", ""}, r.footprintId);
        v(FieldName{"visit", "visit", ""}, r.visit);
        v(FieldName{"det", "det", "pixel"}, r.det);
        v(FieldName{"ign", "ign", "pixel"}, r.ign);
        v(FieldName{"fraction", "fraction", ""}, r.fraction);
        v(FieldName{"clipped", "clipped", ""}, r.clipped);
    }
    SAFECLIP_ROW_SERIALIZE
    bool operator==(const CandidateRow&) const = default;
};

/// One run of CLIPPED pixels of one warp (the coadd's CLIPPED_SPANS table). The checkpoint
/// keeps the spans per warp instead (io::WarpState::clipped, `clipped_spans`).
struct ClippedSpanRow {
    std::int64_t visit = 0;
    std::int64_t y = 0;
    std::int64_t x0 = 0;  ///< inclusive
    std::int64_t x1 = 0;  ///< inclusive

    template <class Row, class V>
    static void fields(Row& r, V&& v) {
        v(FieldName{"visit", "visit", ""}, r.visit);
        v(FieldName{"y", "y", "pixel"}, r.y);
        v(FieldName{"x0", "x0", "pixel"}, r.x0);
        v(FieldName{"x1", "x1", "pixel"}, r.x1);
    }
    SAFECLIP_ROW_SERIALIZE
    bool operator==(const ClippedSpanRow&) const = default;
};

/// The decisions of one patch.
/// comparewarp mode (spec §10 steps 5-8): one artefact candidate of one warp, with its rule
/// ("artefact", "kept: spatial", "kept: contained by source", "dropped: prefilter").
struct CompareWarpRow {
    std::int64_t id = 0;
    std::int64_t visit = 0;
    std::int64_t x0 = 0;  ///< bounding box, inclusive, PARENT pixels
    std::int64_t y0 = 0;
    std::int64_t x1 = 0;
    std::int64_t y1 = 0;
    std::int64_t area = 0;
    std::int64_t nGood = 0;      ///< pixels without a prefilter plane (and with a finite difference)
    double meanNImage = 0;       ///< N̄: mean approximate nImage over the candidate
    std::int64_t maxEpochs = 0;  ///< E = int(min(low·N̄, maxNumEpochs + high·N̄))
    double epochFraction = 0;    ///< #{p: 0 < epochCount(p) <= E} / area
    std::string rule;

    template <class Row, class V>
    static void fields(Row& r, V&& v) {
        v(FieldName{"id", "id", ""}, r.id);
        v(FieldName{"visit", "visit", ""}, r.visit);
        v(FieldName{"bbox_x0", "x0", "pixel"}, r.x0);
        v(FieldName{"bbox_y0", "y0", "pixel"}, r.y0);
        v(FieldName{"bbox_x1", "x1", "pixel"}, r.x1);
        v(FieldName{"bbox_y1", "y1", "pixel"}, r.y1);
        v(FieldName{"area", "area", "pixel"}, r.area);
        v(FieldName{"n_good", "n_good", "pixel"}, r.nGood);
        v(FieldName{"mean_nimage", "mean_nimage", ""}, r.meanNImage);
        v(FieldName{"max_epochs", "max_epochs", ""}, r.maxEpochs);
        v(FieldName{"epoch_fraction", "epoch_fraction", ""}, r.epochFraction);
        v(FieldName{"rule", "cw_rule", ""}, r.rule);
    }
    SAFECLIP_ROW_SERIALIZE
    bool operator==(const CompareWarpRow&) const = default;
};

struct DecisionTable {
    std::vector<FootprintRow> footprints;
    std::vector<CandidateRow> candidates;

    template <class Archive>
    void serialize(Archive& ar, const unsigned int /*version*/) {
        ar& footprints& candidates;
    }
};

}  // namespace safeclip::kernel
