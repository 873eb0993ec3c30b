#pragma once
/// @file Manifest.h  The run manifest (JSON): patches, their pixel boxes and their warps.
///
/// {"format": "safeclip-manifest", "version": 1,
///  "patches": [{"name": "p000", "box": [x0, y0, width, height],
///               "warps": [{"visit": 100, "path": "p000/warp-100.fits"}, ...]}]}
/// Relative paths are relative to the manifest's directory and must stay inside it: no ".."
/// climbing out, and no symbolic link leading out (a warp elsewhere needs an absolute path).
#include <cstdint>
#include <string>
#include <vector>

#include "safeclip/kernel/Box.h"

namespace safeclip::io {

struct ManifestWarp {
    std::int64_t visit = -1;
    std::string path;  ///< resolved (absolute or relative to the current directory)
};

struct ManifestPatch {
    std::string name;
    kernel::Box box;
    std::vector<ManifestWarp> warps;
};

struct Manifest {
    std::vector<ManifestPatch> patches;
};

/// @throws ConfigError "PATH: problem" on unreadable/invalid JSON, missing fields, duplicate patch
///         names, a patch name that is not a plain file name, or a relative warp path that escapes
///         the manifest's directory (by "..", or through a symbolic link).
Manifest readManifest(const std::string& path);
/// Atomic write (tmp + rename); paths are written as given.
void writeManifest(const std::string& path, const Manifest& manifest);

}  // namespace safeclip::io
