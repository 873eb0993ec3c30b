#pragma once
/// @file WarpValidation.h  Check the warps of one patch before a coadd, reporting every problem
/// (file, problem, fatal or warning) instead of stopping at the first. Used at the start of
/// `coadd`/`run` (headers only, or with input.validate_pixels the pixels too) and by
/// `safeclip validate` (app/Validate.h formats the result).
///
/// Checks, per file: it opens as an afw warp (IMAGE/MASK/VARIANCE HDUs, MP_* mask planes without
/// duplicate names or bits; see io::WarpReader); its box equals the first readable warp's (or
/// covers the patch box when one is given); its celestial WCS cards equal the first readable
/// warp's (same keys; numbers within 1e-9 relative; CRPIX compared in PARENT pixels, so warps with
/// different xy0 on one grid agree); a positive zero point (FLUXMAG0 or PhotoCalib); a DETECTED
/// mask plane (warning only: such a warp can never be a clip candidate); the image is not all NaN;
/// the variance is finite and > 0 wherever the image is finite and not NO_DATA (read in row
/// chunks, bad pixels counted); visits (VISIT/EXPID cards) are not repeated.
#include <string>
#include <vector>

#include "safeclip/kernel/Box.h"

namespace safeclip::io {

struct WarpProblem {
    std::string file;     ///< the path as given
    std::string problem;  ///< one line, without the file name
    bool fatal = true;    ///< false: a warning that does not make the warp unusable
    /// A case upstream's prepareInputs skips (all-NaN image; a variance that is zero or not finite
    /// wherever the image is finite, so the weight is not finite): skipped by default.
    bool upstreamSkips = false;
};

/// Validate `paths` as the warps of one patch. `patchBox` (may be null): the patch box every warp
/// must cover; null = every warp must have the first readable warp's box.
/// Never throws for a bad warp (every problem is returned); files are checked in order.
/// `pixels` = false skips the pixel scan (all-NaN image, bad variance): headers only, as `coadd`
/// and `run` do before any work.
/// Warps whose FILTER cards differ (a coadd of two bands) are a fatal problem naming both files
/// unless `allowMixedFilters` (input.allow_mixed_filters; then a warning). Warps without a FILTER
/// card are not compared.
/// `zeroPointGiven` (may be null; else one flag per path): the manifest gives that warp's zero point
/// ("zero_point"), so a missing or non-positive FLUXMAG0 is not a problem.
/// `psfSigmaNeeded` (may be null; else one reason per path, "" = not needed): the coadd needs the
/// warp's PSF width (PSFSIGMA or FWHM card) for that reason, so a warp without one is a problem
/// (pipeline::psfSigmaNeeds says when).
std::vector<WarpProblem> validateWarps(const std::vector<std::string>& paths, const kernel::Box* patchBox,
                                       bool pixels = true, bool allowMixedFilters = false,
                                       const std::vector<bool>* zeroPointGiven = nullptr,
                                       const std::vector<std::string>* psfSigmaNeeded = nullptr);

/// True when any problem is fatal.
bool anyFatal(const std::vector<WarpProblem>& problems);

}  // namespace safeclip::io
