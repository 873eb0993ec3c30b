#pragma once
/// @file Resume.h  `safeclip run --resume` and the state a previous run left on disk.
#include <string>
#include <vector>

#include "safeclip/io/Manifest.h"

namespace safeclip::app {

/// Temporaries left by a killed writer of this patch (this patch belongs to exactly one group of one
/// job, so no live writer can own them). Exactly the names this patch's writers make, nothing else:
/// "<out>.tmp.<digits>", "<ckdir>/<patch>.reduced.h5.tmp.<digits>" and
/// "<ckdir>/<patch>.tiles/tile_X_Y_WxH.h5.tmp.<digits>".
void removeStaleTemporaries(const std::string& out, const std::string& ckdir, const std::string& patch);

/// What --resume does with a patch whose output may exist (group root).
enum class OnResume : int { Run = 0, Skip = 1, Refuse = 2 };

/// Decides on the group root: a whole, current output is skipped; a damaged one is redone with a
/// warning; one of another configuration or made from other inputs is refused (`why`) unless
/// --restart, which redoes it. `cosmicRayStage`: this configuration has cosmic_rays.detect (an
/// output of it then also has the CR_SPANS table).
/// `cfgLines`: this configuration's CONFIG lines, to name the keys that differ from the output's.
OnResume decideOnResume(const std::string& out, const std::string& cfgHash, const io::ManifestPatch& patch,
                        bool restart, std::string& why, bool cosmicRayStage = false,
                        const std::vector<std::string>& cfgLines = {});

/// The pixel-affecting keys whose values differ between two CONFIG tables ("key = value" lines), one
/// line: "stack.sigma_clip = 1.5 there, 2.0 now; comparewarp.threshold only now (6.0)" (the first
/// `maxKeys`, then "and N more"); "" when they are equal.
std::string configDifference(const std::vector<std::string>& was, const std::vector<std::string>& now,
                             std::size_t maxKeys = 6);

/// A plain `run` (no --resume) about to replace the existing output `out`: one log line, saying
/// which keys differ when it was made with another configuration (a warning) or that it is
/// replaced (info). Nothing when there is no file.
void logReplacement(const std::string& out, const std::string& cfgHash,
                    const std::vector<std::string>& cfgLines);

}  // namespace safeclip::app
