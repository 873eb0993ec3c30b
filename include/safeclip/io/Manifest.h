#pragma once
/// @file Manifest.h  The run manifest (JSON): patches, their pixel boxes and their warps.
///
/// {"format": "safeclip-manifest", "version": 1,
///  "patches": [{"name": "p000", "box": [x0, y0, width, height],
///               "warps": [{"visit": 100, "path": "p000/warp-100.fits"}, ...]}]}
/// Relative paths are relative to the manifest's directory and must stay inside it: no ".."
/// climbing out, and no symbolic link leading out (a warp elsewhere needs an absolute path).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "safeclip/kernel/Box.h"

namespace safeclip::io {

/// Longest patch name: "<name>.reduced.h5.tmp.<pid>" (pid up to 7 digits) must fit in 255 bytes.
inline constexpr std::size_t kMaxPatchNameBytes = 255 - (sizeof(".reduced.h5.tmp.") - 1) - 7;
/// Largest patch box: 2^31 pixels (a 46,340-pixel square; the gathered patch alone is 28 GiB).
inline constexpr std::int64_t kMaxPatchPixels = std::int64_t{1} << 31;

struct ManifestWarp {
    /// (A constructor rather than an aggregate: `{visit, path}` leaves the rest at their defaults
    /// without -Wmissing-field-initializers.)
    ManifestWarp(std::int64_t visit_ = -1, std::string path_ = {}) : visit(visit_), path(std::move(path_)) {}
    std::int64_t visit = -1;
    std::string path;        ///< resolved (absolute or relative to the current directory)
    std::string psfMatched;  ///< "psf_matched": the PSF-matched companion (resolved), or ""
    /// "zero_point": the warp's AB zero point, used instead of its FLUXMAG0/PhotoCalib (e.g. an
    /// afw file whose FLUXMAG0 is 0); in (0, 100).
    std::optional<double> zeroPoint;
};

struct ManifestPatch {
    std::string name;
    kernel::Box box;
    std::vector<ManifestWarp> warps;
};

struct Manifest {
    std::vector<ManifestPatch> patches;
};

/// @throws ConfigError "PATH: problem" on a file that is not a regular file (a FIFO would block),
///         unreadable/invalid JSON, missing fields, duplicate patch names, a patch name that cannot
///         become a file name (empty, '.', '..', '/', a control character, longer than
///         kMaxPatchNameBytes), a box whose x0 + width or y0 + height leaves int32 or whose area is
///         above kMaxPatchPixels, or a relative warp path that escapes the manifest's directory (by
///         "..", or through a symbolic link).
Manifest readManifest(const std::string& path);
/// Atomic write (tmp + rename); paths are written as given.
void writeManifest(const std::string& path, const Manifest& manifest);

}  // namespace safeclip::io
