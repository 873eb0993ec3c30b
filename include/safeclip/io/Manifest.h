#pragma once
/// @file Manifest.h  The run manifest (JSON): patches, their pixel boxes and their warps.
///
/// {"format": "safeclip-manifest", "version": 1,
///  "patches": [{"name": "p000", "box": [x0, y0, width, height],
///               "warps": [{"visit": 100, "path": "p000/warp-100.fits"}, ...]}]}
/// Relative paths are relative to the manifest's directory.
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
///         names, or a patch name that is not a plain file name.
Manifest readManifest(const std::string& path);
/// Atomic write (tmp + rename); paths are written as given.
void writeManifest(const std::string& path, const Manifest& manifest);

}  // namespace safeclip::io
