#pragma once
/// @file OutputGuards.h  What protects outputs and inputs from each other and from a second run:
/// an output never replaces an input, and `run` holds output.dir exclusively.
#include <string>
#include <utility>
#include <vector>

#include "safeclip/io/Manifest.h"

namespace safeclip::app {

/// The first of `outputs` that is, or would replace, one of `inputs`, as {output, input}; {"", ""}
/// when none does. The same file is the same device and inode (symbolic links followed) or the same
/// normalized absolute path (symbolic links of existing parents resolved), so an output that does
/// not exist yet but names an input is found too. Reads only metadata (stat).
std::pair<std::string, std::string> outputReplacingInput(const std::vector<std::string>& outputs,
                                                         const std::vector<std::string>& inputs);

/// `run`'s exclusive hold on output.dir, so two runs (a requeued Slurm job and a resubmitted one)
/// cannot sweep or replace each other's files: flock(2) on <dir>/.safeclip.lock, which holds the
/// holder's "host pid start-time" (UTC). A run with --shard K/N holds that file shared (the shards
/// of one run may share output.dir) and <dir>/.safeclip.shard-K-of-N.lock exclusively. The kernel
/// drops the lock when the process ends, however it ends; the (empty) lock files stay.
class OutputDirLock {
public:
    /// @throws OutputError "DIR: in use by another safeclip run (host H, pid P, started T; lock
    ///         FILE)" when another process holds it, or when the lock file cannot be opened.
    OutputDirLock(const std::string& dir, int shardIndex = 0, int shardCount = 1);
    ~OutputDirLock();
    OutputDirLock(const OutputDirLock&) = delete;
    OutputDirLock& operator=(const OutputDirLock&) = delete;
    /// "host pid start-time" of this process, as written into the lock file.
    [[nodiscard]] static std::string holderText();

private:
    int m_dirFd = -1;    ///< .safeclip.lock
    int m_shardFd = -1;  ///< .safeclip.shard-K-of-N.lock (sharded runs only)
    bool m_exclusive = false;
};

/// Exit 2 (ConfigError) when a patch's output (or the report or the lock file) is, or would
/// replace, a warp of the manifest (any patch's): run would overwrite its own input.
void refuseOutputsThatAreInputs(const io::Manifest& manifest, const std::string& outDir);

}  // namespace safeclip::app
