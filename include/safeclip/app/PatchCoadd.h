#pragma once
/// @file PatchCoadd.h  SafeClip on one patch, from the app layer: the configuration becomes the
/// pipeline's settings (makePatchSettings, the one place where keys reach the pipeline), and
/// pipeline::runPatch (pipeline/Driver.h) runs the mode's stages over the patch's rank group.
#include <optional>
#include <string>
#include <vector>

#include "safeclip/app/Config.h"
#include "safeclip/kernel/Box.h"
#include "safeclip/parallel/Comm.h"
#include "safeclip/pipeline/Driver.h"
#include "safeclip/pipeline/PatchResult.h"
#include "safeclip/pipeline/Settings.h"

namespace safeclip::app {

using pipeline::CheckpointOptions;
using pipeline::detectionHalo;
using pipeline::PatchResult;
using pipeline::WarpInput;

/// The configuration keys that change pixels, as "key = value" lines (written to the coadd's CONFIG
/// table). Execution keys (memory, tiles, logging, paths, policies) are excluded so that outputs are
/// byte-identical across budgets, tile sizes and rank counts.
std::vector<std::string> scienceConfig(const Config& cfg);
/// FNV-1a-64 hash of scienceConfig() (the coadd's SCCFGHSH card; used by --resume).
std::string scienceConfigHash(const Config& cfg);

/// The pipeline's settings from the configuration: mask bits of the canonical dictionary, the
/// validated stack/clip/detect/interp controls, the budget, the science lines and their hash, and
/// the QA picture (qa.enabled) as the afterWrite hook.
/// @throws ConfigError (an unknown mask plane, an invalid control)
pipeline::PatchSettings makePatchSettings(const Config& cfg);

/// `<dir>/<stem>.qa.png` of a coadd (the QA picture qa.enabled writes next to it).
std::string qaPicturePath(const std::string& fits);
/// With qa.enabled, a finished coadd that --resume skips gets its QA picture when it has none or an
/// older one (the picture is written after the FITS is published: a run stopped in between would
/// otherwise never make it). Returns true when it wrote one. @throws OutputError, InputError
bool ensureQaPicture(const Config& cfg, const std::string& patch, const std::string& fits);

/// With output.weight_map: `<stem>.weight.fits` next to `fits` (1/VARIANCE, 0 where there is none,
/// the coadd's WCS; atomic). ensureWeightMap writes it on --resume when it is missing, damaged or
/// older than the coadd, and says whether it did.
std::string weightMapPath(const std::string& fits);
void writeWeightMap(const std::string& fits, const std::string& path);
bool ensureWeightMap(const Config& cfg, const std::string& patch, const std::string& fits);

/// The tile halo's sigma and halo from the configuration (pipeline::haloSigma, pipeline::tileHalo),
/// for `safeclip plan`, which computes the run's tile plan from the warp headers alone.
double haloSigma(const Config& cfg, const std::vector<std::optional<double>>& headerSigmas);
int tileHalo(const Config& cfg, double sigma);

/// Coadd one patch and write `outPath` atomically (on the group's rank 0): pipeline::runPatch with
/// makePatchSettings(cfg).
PatchResult coaddPatch(const std::string& name, const kernel::Box& box, const std::vector<WarpInput>& warps,
                       const Config& cfg, const std::string& outPath, const parallel::Comm* group = nullptr,
                       const CheckpointOptions& checkpoints = {});

}  // namespace safeclip::app
