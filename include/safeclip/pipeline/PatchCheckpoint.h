#pragma once
/// @file PatchCheckpoint.h  The on-disk checkpoints of one patch (their format: io/Checkpoint.h):
/// names, the key that ties them to a run, and the final stage's tile checkpoints. The stages
/// "resume" and "checkpoint" (Stages.h) read and write the decision checkpoint.
///   <checkpoint.dir>/<patch>.reduced.h5          weights, decisions, CLIPPED spans (after "reduce" or
///                                                "cw_decide"; comparewarp: its state too)
///   <checkpoint.dir>/<patch>.tiles/tile_X_Y_WxH.h5  one finished final tile
/// Temporaries are "<name>.tmp.<pid>" (swept by `safeclip run` before a patch starts).
#include <string>
#include <vector>

#include "safeclip/io/Checkpoint.h"
#include "safeclip/pipeline/PatchContext.h"

namespace safeclip::pipeline {

[[nodiscard]] std::string decisionCheckpointPath(const std::string& dir, const std::string& patch);
[[nodiscard]] std::string tileCheckpointDir(const std::string& dir, const std::string& patch);
[[nodiscard]] std::string tileCheckpointPath(const std::string& dir, const std::string& patch,
                                             const kernel::Box& tile);

/// What ties a checkpoint to this run: the pixel-affecting config and the input fingerprints.
[[nodiscard]] io::CheckpointKey checkpointKey(const PatchContext& ctx);

/// Root, after the FITS is published: the checkpoints of this patch are no longer needed.
void removeCheckpoints(const PatchContext& ctx);
/// Removes exactly the names this writer produces for `patch` in checkpoint dir `dir`: the decision
/// checkpoint, its "<name>.tmp.<pid>" temporaries, "tile_X_Y_WxH.h5" (and temporaries) in its tile
/// dir, then the tile dir if it is empty. Never a foreign file; no error when nothing is there.
void removeCheckpoints(const std::string& dir, const std::string& patch);
/// Removes `dir` when it is empty (after a run: every group is done with it).
void removeCheckpointDirIfEmpty(const std::string& dir);

}  // namespace safeclip::pipeline
