#pragma once
/// @file MakeManifest.h  `safeclip manifest`: a manifest from a set of warps (issue 16 item 4), so
/// that nobody reads patch boxes off CRVAL1A/NAXIS by hand.
///
/// Each input is a warp file or a directory (its `*.fits` and `*.fits.fz` files, sorted by name, not
/// recursive). The warps are grouped by their PARENT box into patches, in order of first appearance;
/// a patch is named by the `nameKey` header card of its first warp when given (e.g. PATCH), else
/// "x<x0>_y<y0>" from its box. Each patch's warps must pass the header checks `safeclip validate`
/// makes (the same celestial WCS, a zero point, ...; io::validateWarps without the pixel scan); a
/// visit comes from the header (VISIT/EXPID) when every warp of the patch has one, else the entry
/// has none (`run` then numbers by position). Paths inside the manifest's directory are written
/// relative to it, others absolute.
#include <string>
#include <vector>

namespace safeclip::app {

struct MakeManifestOptions {
    std::vector<std::string> inputs;  ///< warp files and directories
    std::string out;                  ///< the manifest to write (atomically)
    bool overwrite = false;           ///< replace `out` when it exists
    std::string nameKey;              ///< header card naming the patch ("" = from the box)
};

/// One line per patch for the summary: name, box, warps, filters.
struct ManifestSummary {
    std::vector<std::string> lines;
    std::size_t nWarps = 0;
};

/// @throws ConfigError (exit 2) for a bad option, an existing `out` without overwrite or no input
///         file; InputError (exit 3) listing every warp that fails the checks (nothing written).
ManifestSummary makeManifest(const MakeManifestOptions& opts);

}  // namespace safeclip::app
