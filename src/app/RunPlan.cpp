/// @file RunPlan.cpp  `safeclip plan`: the run's plan from the manifest, the config and the warp
/// headers (no pixels are read).
#include "safeclip/app/RunPlan.h"

#include <algorithm>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "safeclip/app/PatchCoadd.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/io/Manifest.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/pipeline/Driver.h"

namespace safeclip::app {

RunPlan makePlan(const Config& cfg, int nRanks, int shardIndex, int shardCount) {
    if (nRanks < 1) {
        throw ConfigError("plan: -n must be >= 1");
    }
    const std::string manifestPath = cfg.path("input.manifest");
    if (manifestPath.empty()) {
        throw ConfigError(
            "input.manifest is not set (give it in the config or with --set input.manifest=FILE)");
    }
    io::Manifest manifest = io::readManifest(manifestPath);
    if (shardCount > 1) {  // as runManifest does for --shard K/N
        std::vector<io::ManifestPatch> kept;
        for (std::size_t i = 0; i < manifest.patches.size(); ++i) {
            if (static_cast<int>(i % static_cast<std::size_t>(shardCount)) == shardIndex) {
                kept.push_back(manifest.patches[i]);
            }
        }
        manifest.patches = std::move(kept);
    }
    RunPlan plan;
    plan.nRanks = nRanks;
    plan.shardIndex = shardIndex;
    plan.shardCount = shardCount;
    plan.mode = cfg.getString("coadd.mode");
    plan.budgetBytes = geom::parseByteSize(cfg.getString("memory.max_per_rank"), "memory.max_per_rank");
    const bool trialPass = plan.mode == "safeclip";
    const bool compareWarp = plan.mode == "comparewarp";
    const bool validatePixels = cfg.getBool("input.validate_pixels");
    const pipeline::PatchSettings settings = makePatchSettings(cfg);
    const std::optional<geom::CosmicRayStage> crStage = pipeline::cosmicRayStage(settings);
    std::vector<double> costs;
    for (const auto& p : manifest.patches) {
        costs.push_back(static_cast<double>(p.box.area()) *
                        static_cast<double>(std::max<std::size_t>(1, p.warps.size())));
    }
    const geom::GroupPlan groups = geom::planGroups(costs, nRanks);
    plan.nGroups = groups.nGroups;
    plan.ranks.resize(static_cast<std::size_t>(nRanks));
    for (RankPlan& r : plan.ranks) {
        r.budgetBytes = plan.budgetBytes;
    }
    for (std::size_t p = 0; p < manifest.patches.size(); ++p) {
        const auto& patch = manifest.patches[p];
        PatchPlan pp;
        pp.name = patch.name;
        pp.box = patch.box;
        pp.warps = static_cast<int>(patch.warps.size());
        pp.group = groups.groupOfPatch[p];
        for (int r = 0; r < nRanks; ++r) {
            if (groups.groupOfRank[static_cast<std::size_t>(r)] == pp.group) {
                pp.ranks.push_back(r);
            }
        }
        // The warps' headers, as the "open" stage sees them (no pixels are read).
        std::vector<std::optional<double>> sigmas;
        std::string noSigma;  // a warp the "detection" stage would refuse (no PSF card, no override)
        std::vector<kernel::Box> opened;   // each warp's box; empty for one that does not open
        std::int64_t validationReads = 0;  // input.validate_pixels: the group root scans every warp
        std::vector<pipeline::CompareWarpPsf> cwPsfs;  // comparewarp: the PSF of each warp that opens
        std::vector<bool> cwCompanion;                 // comparewarp: per warp, read from "psf_matched"
        std::string cwError;                           // what "cw_setup" would refuse
        for (const auto& w : patch.warps) {
            cwCompanion.push_back(!w.psfMatched.empty());
            try {
                const io::WarpReader reader(w.path);
                if (compareWarp) {  // as "cw_setup": the companion's PSF card when there is one
                    std::optional<double> s = reader.header().psfSigma;
                    if (!w.psfMatched.empty()) {
                        try {
                            s = io::WarpReader(w.psfMatched).header().psfSigma;
                        } catch (const Error& e) {
                            cwError = cwError.empty() ? std::string(e.what()) : cwError;
                        }
                    }
                    if (!s && cwError.empty()) {
                        cwError =
                            w.path +
                            ": no PSFSIGMA or FWHM card; coadd.mode = comparewarp PSF-matches each warp "
                            "and needs its PSF sigma";
                    }
                    cwPsfs.push_back({w.path, s.value_or(0.0), !w.psfMatched.empty()});
                }
                sigmas.push_back(reader.header().psfSigma);
                if (!reader.header().psfSigma && noSigma.empty()) {
                    noSigma = w.path;
                }
                opened.push_back(reader.header().box);
                if (pp.box.empty()) {
                    pp.box = reader.header().box;
                }
                if (validatePixels) {
                    validationReads += reader.header().box.area() * geom::kStackReadBytesPerPixel;
                }
                ++pp.warpsOpened;
            } catch (const Error&) {
                opened.push_back(kernel::Box());
            }
        }
        pp.haloSigma = haloSigma(cfg, sigmas);
        pp.haloSigmaSource = cfg.getDouble("detect.psf_sigma") > 0 ? "config detect.psf_sigma"
                             : pp.haloSigma > 0 ? "largest PSFSIGMA/FWHM of the warp headers"
                                                : "none: no PSFSIGMA or FWHM card and detect.psf_sigma = 0";
        if (trialPass && !(pp.haloSigma > 0)) {
            pp.error = "no PSFSIGMA or FWHM card and detect.psf_sigma = 0; set detect.psf_sigma";
        } else if (trialPass && !(cfg.getDouble("detect.psf_sigma") > 0) && !noSigma.empty()) {
            // The detection sigma is the adaptive-moment radius of every used warp's Gaussian: each
            // needs one.
            pp.error = noSigma + ": no PSFSIGMA or FWHM card and detect.psf_sigma = 0; set detect.psf_sigma";
        }
        pp.halo = trialPass ? tileHalo(cfg, pp.haloSigma) : 0;  // the "detection" stage (none in mean mode)
        std::optional<geom::CompareWarpStage> cwStage;
        if (compareWarp) {  // the "cw_setup" stage: halo and kernels from the model PSF
            pp.error = cwError;
            try {
                const pipeline::CompareWarpGeometry g = pipeline::compareWarpGeometry(settings, cwPsfs);
                pp.haloSigma = g.modelSigma;
                pp.haloSigmaSource =
                    settings.compareWarp.modelPsfSigma > 0
                        ? "comparewarp model PSF sigma: config comparewarp.model_psf_sigma"
                        : "comparewarp model PSF sigma: the largest PSFSIGMA/FWHM of the warp "
                          "headers (a companion's when the manifest names one)";
                pp.halo = g.halo;
                cwStage = pipeline::compareWarpStage(g, cwCompanion);
            } catch (const Error& e) {
                pp.error = pp.error.empty() ? std::string(e.what()) : pp.error;
            }
            if (!cwStage) {  // still model the stages (with no halo) to report the budget
                cwStage =
                    geom::CompareWarpStage{0, cwCompanion, settings.compareWarp.preserveContainedBySource};
            }
        }
        const auto groupSize = static_cast<int>(pp.ranks.size());
        const geom::TilePlan tp =
            geom::planTiles(pp.box, groupSize, static_cast<int>(cfg.getInt("tile.size")), pp.halo,
                            pp.warpsOpened, plan.budgetBytes, compareWarp);
        pp.tileSize = tp.tileSize;
        pp.tiles = static_cast<int>(tp.tiles.size());
        try {
            pp.warpBytesRead =
                geom::expectedWarpBytesRead(pp.box, tp.tiles, pp.halo, opened, trialPass, crStage, cwStage) +
                validationReads;
            pp.perRank = geom::checkedPatchBudget(
                pp.box, tp, groupSize, static_cast<int>(cfg.getInt("tile.size")), opened, trialPass,
                plan.budgetBytes, pp.name, validationReads, crStage, cwStage);
        } catch (const ConfigError& e) {
            pp.error = pp.error.empty() ? std::string(e.what()) : pp.error;
        }
        for (const geom::RankBudget& b : pp.perRank) {
            if (b.weightsRows > 0) {
                pp.weightsRows =
                    pp.weightsRows == 0 ? b.weightsRows : std::min(pp.weightsRows, b.weightsRows);
            }
            if (b.trialRows > 0) {
                pp.trialRows = pp.trialRows == 0 ? b.trialRows : std::min(pp.trialRows, b.trialRows);
            }
            if (b.finalRows > 0) {
                pp.finalRows = pp.finalRows == 0 ? b.finalRows : std::min(pp.finalRows, b.finalRows);
            }
        }
        for (std::size_t t = 0; t < tp.tiles.size(); ++t) {
            RankPlan& r =
                plan.ranks[static_cast<std::size_t>(pp.ranks[static_cast<std::size_t>(tp.owner[t])])];
            r.tiles += 1;
            r.pixelWarps += static_cast<double>(tp.tiles[t].area()) * pp.warpsOpened;
        }
        for (std::size_t g = 0; g < pp.perRank.size(); ++g) {
            RankPlan& r = plan.ranks[static_cast<std::size_t>(pp.ranks[g])];
            r.peakBytes = std::max(r.peakBytes, pp.perRank[g].peakBytes);
            r.warpBytesRead += pp.perRank[g].warpBytesRead;
        }
        plan.patches.push_back(std::move(pp));
    }
    return plan;
}

std::string planText(const RunPlan& plan) {
    std::ostringstream os;
    os << "plan: " << plan.patches.size() << " patches on " << plan.nRanks << " ranks in " << plan.nGroups
       << " groups; memory.max_per_rank = " << geom::formatByteSize(plan.budgetBytes);
    if (plan.shardCount > 1) {
        os << "; shard " << plan.shardIndex << "/" << plan.shardCount;
    }
    os << "\n";
    for (const PatchPlan& pp : plan.patches) {
        os << "patch " << pp.name << ": " << pp.box.width << "x" << pp.box.height << ", " << pp.warps
           << " warps, group " << pp.group << " (ranks";
        for (int r : pp.ranks) {
            os << " " << r;
        }
        os << "), " << pp.tiles << " tiles of " << pp.tileSize << " px, halo " << pp.halo << " px";
        if (pp.halo > 0) {
            os << " (PSF sigma " << std::fixed << std::setprecision(2) << pp.haloSigma << " px)";
        }
        if (plan.mode == "comparewarp") {
            std::int64_t stats = 0;
            std::int64_t compare = 0;
            for (const geom::RankBudget& b : pp.perRank) {
                stats = std::max(stats, b.cwStatsBytes);
                compare = std::max(compare, b.cwCompareBytes);
            }
            os << "; chunk rows: weights " << pp.weightsRows << ", final " << pp.finalRows
               << "; comparewarp statistics " << geom::formatByteSize(stats) << " (largest warp), compare "
               << geom::formatByteSize(compare) << " (largest tile plus halo); reads about "
               << geom::formatByteSize(pp.warpBytesRead)
               << " (weights pass, comparewarp statistics and tiles, final stack)\n";
        } else {
            os << "; chunk rows: weights " << pp.weightsRows << ", trial " << pp.trialRows << ", final "
               << pp.finalRows << "; reads about " << geom::formatByteSize(pp.warpBytesRead)
               << " (weights pass, trial and final stacks)\n";
        }
        if (!pp.error.empty()) {
            os << "  error: " << pp.error << "\n";
        }
    }
    for (std::size_t r = 0; r < plan.ranks.size(); ++r) {
        const RankPlan& rp = plan.ranks[r];
        os << "rank " << r << ": " << rp.tiles << " tiles, memory <= " << geom::formatByteSize(rp.budgetBytes)
           << " + overhead (model peak " << geom::formatByteSize(rp.peakBytes) << "), reads about "
           << geom::formatByteSize(rp.warpBytesRead) << "\n";
    }
    return os.str();
}

std::string planJson(const RunPlan& plan) {
    nlohmann::json j;
    j["format"] = "safeclip-plan";
    j["version"] = 1;
    j["rank_count"] = plan.nRanks;
    j["group_count"] = plan.nGroups;
    j["shard"] = {{"index", plan.shardIndex}, {"count", plan.shardCount}};
    j["mode"] = plan.mode;
    // Every mode's stages are in the model (comparewarp: cw_stats and cw_compare too).
    j["memory_model_complete"] = true;
    j["memory_max_per_rank"] = plan.budgetBytes;
    auto& patches = j["patches"];
    patches = nlohmann::json::array();
    std::int64_t largest = 0;
    for (const PatchPlan& pp : plan.patches) {
        largest = std::max(largest, pp.box.area());
        nlohmann::json perRank = nlohmann::json::array();
        for (std::size_t g = 0; g < pp.perRank.size(); ++g) {
            const geom::RankBudget& b = pp.perRank[g];
            perRank.push_back(
                {{"rank", pp.ranks[g]},
                 {"tiles", b.tiles},
                 {"peak_bytes", b.peakBytes},
                 {"warp_bytes_read", b.warpBytesRead},
                 {"chunk_rows",
                  {{"weights", b.weightsRows}, {"trial", b.trialRows}, {"final", b.finalRows}}}});
            if (plan.mode == "comparewarp") {  // the mode's own stages: largest warp, largest tile
                perRank.back()["comparewarp_bytes"] = {{"stats", b.cwStatsBytes},
                                                       {"compare", b.cwCompareBytes}};
            }
        }
        patches.push_back(
            {{"name", pp.name},
             {"box",
              {{"x0", pp.box.x0}, {"y0", pp.box.y0}, {"width", pp.box.width}, {"height", pp.box.height}}},
             {"warps", pp.warps},
             {"warps_opened", pp.warpsOpened},
             {"group", pp.group},
             {"ranks", pp.ranks},
             {"pixel_warps", static_cast<double>(pp.box.area()) * std::max(1, pp.warps)},
             {"halo_sigma", pp.haloSigma},
             {"halo_sigma_source", pp.haloSigmaSource},
             {"halo", pp.halo},
             {"tile_size", pp.tileSize},
             {"tiles", pp.tiles},
             {"warp_bytes_read", pp.warpBytesRead},
             {"chunk_rows", {{"weights", pp.weightsRows}, {"trial", pp.trialRows}, {"final", pp.finalRows}}},
             {"memory_per_rank", perRank},
             {"error", pp.error}});
    }
    auto& ranks = j["ranks"];
    ranks = nlohmann::json::array();
    double makespan = 0;
    std::int64_t peak = 0;
    for (std::size_t r = 0; r < plan.ranks.size(); ++r) {
        const RankPlan& rp = plan.ranks[r];
        makespan = std::max(makespan, rp.pixelWarps);
        peak = std::max(peak, rp.peakBytes);
        ranks.push_back({{"rank", r},
                         {"tiles", rp.tiles},
                         {"memory_bytes", rp.budgetBytes},
                         {"peak_bytes", rp.peakBytes},
                         {"warp_bytes_read", rp.warpBytesRead},
                         {"pixel_warps", rp.pixelWarps}});
    }
    j["largest_patch_pixels"] = largest;
    j["max_pixel_warps_per_rank"] = makespan;
    j["max_peak_bytes"] = peak;
    return j.dump(2) + "\n";
}

std::string describePlan(const Config& cfg, int nRanks) {
    return planText(makePlan(cfg, nRanks));
}

}  // namespace safeclip::app
