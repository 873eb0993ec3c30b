#include "safeclip/app/Runner.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/mpi/collectives.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/vector.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "safeclip/Version.h"
#include "safeclip/app/Logging.h"
#include "safeclip/app/OutputGuards.h"
#include "safeclip/app/PatchCoadd.h"
#include "safeclip/app/Resume.h"
#include "safeclip/app/RunReport.h"
#include "safeclip/app/Signals.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/io/AtomicFile.h"
#include "safeclip/io/Checkpoint.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/FitsFile.h"
#include "safeclip/io/Manifest.h"
#include "safeclip/io/RowFormats.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/parallel/Collectives.h"
#include "safeclip/pipeline/PatchCheckpoint.h"

namespace safeclip::app {

namespace fs = std::filesystem;

std::pair<int, int> parseShard(const std::string& text) {
    int k = -1;
    int n = 0;
    char slash = 0;
    char extra = 0;
    if (std::sscanf(text.c_str(), "%d%c%d%c", &k, &slash, &n, &extra) != 3 || slash != '/' || n < 1 ||
        k < 0 || k >= n) {
        throw ConfigError("--shard: '" + text + "' must be K/N with 0 <= K < N (e.g. 0/4)");
    }
    return {k, n};
}

int runManifest(const Config& cfg, const RunOptions& opts, const parallel::Comm& comm) {
    const auto t0 = std::chrono::steady_clock::now();
    int code = 0;
    io::Manifest manifest;
    std::string outDir;
    std::optional<OutputDirLock> lock;  // world rank 0 only, held until the run returns
    // Setup errors (bad manifest, unwritable output dir) are detected on every rank alike; agree anyway.
    try {
        const std::string manifestPath = cfg.path("input.manifest");
        if (manifestPath.empty()) {
            throw ConfigError(
                "input.manifest is not set (give it in the config or with --set input.manifest=FILE)");
        }
        manifest = io::readManifest(manifestPath);
        outDir = cfg.path("output.dir");
        if (comm.rank() == 0) {
            std::error_code ec;
            fs::create_directories(outDir, ec);
            if (ec || !fs::is_directory(outDir)) {
                throw OutputError(outDir + ": cannot create output directory: " + ec.message());
            }
            refuseOutputsThatAreInputs(manifest, outDir);
            lock.emplace(outDir, opts.shardIndex, opts.shardCount);
        }
    } catch (const Error& e) {
        log().error("{}", e.what());
        code = static_cast<int>(e.code());
    }
    if (!comm.agree(code == 0)) {
        return static_cast<int>(comm.max(code));
    }

    if (opts.shardCount > 1) {
        std::vector<io::ManifestPatch> kept;
        for (std::size_t i = 0; i < manifest.patches.size(); ++i) {
            if (static_cast<int>(i % static_cast<std::size_t>(opts.shardCount)) == opts.shardIndex) {
                kept.push_back(manifest.patches[i]);
            }
        }
        if (comm.rank() == 0) {
            log().info("run: shard {}/{}: {} of {} patches", opts.shardIndex, opts.shardCount, kept.size(),
                       manifest.patches.size());
        }
        manifest.patches = std::move(kept);
    }
    std::string checkpointDir = cfg.path("checkpoint.dir");
    if (checkpointDir.empty()) {
        checkpointDir = (fs::path(outDir) / "checkpoints").string();
    }
    CheckpointOptions ckpt{checkpointDir, opts.resume, opts.restart,
                           cfg.getDouble("checkpoint.tile_interval")};

    std::vector<double> costs;
    for (const auto& p : manifest.patches) {
        costs.push_back(static_cast<double>(p.box.area()) *
                        static_cast<double>(std::max<std::size_t>(1, p.warps.size())));
    }
    // Rank groups: with at least as many patches as ranks every rank owns whole patches; with fewer,
    // the ranks split into one group per patch and the group shares the patch's tiles.
    const geom::GroupPlan plan = geom::planGroups(costs, comm.size());
    const int color = plan.groupOfRank[static_cast<std::size_t>(comm.rank())];
    const parallel::Comm group(comm.raw().split(color, comm.rank()));
    const std::vector<int>& owner = plan.groupOfPatch;
    long long mine = 0;
    for (int g : owner) {
        mine += g == color ? 1 : 0;
    }
    if (comm.rank() == 0) {
        log().info("run: {} patches on {} ranks in {} groups; output {}", manifest.patches.size(),
                   comm.size(), plan.nGroups, outDir);
    }

    const std::string cfgHash = scienceConfigHash(cfg);
    const std::vector<std::string> cfgLines = scienceConfig(cfg);
    PreviousReport previousReport{(fs::path(outDir) / reportFileName(opts)).string(), std::nullopt};
    long long done = 0;
    long long skipped = 0;
    long long failed = 0;
    std::vector<PatchOutcome> outcomes;
    long long handled = 0;
    const std::string progress = cfg.getString("log.progress");
    const bool showProgress = progress == "on" || (progress == "auto" && ::isatty(STDERR_FILENO) != 0);
    auto lastProgress = std::chrono::steady_clock::now();
    auto secondsSinceProgress = [&] {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - lastProgress).count();
    };
    for (std::size_t p = 0; p < manifest.patches.size(); ++p) {
        if (owner[p] != color) {
            continue;
        }
        const auto& patch = manifest.patches[p];
        const std::string out = (fs::path(outDir) / (patch.name + ".fits")).string();
        PatchOutcome o;
        o.index = static_cast<std::int64_t>(p);
        o.name = patch.name;
        o.outputPath = out;
        o.rank = comm.rank();
        o.nWarps = static_cast<int>(patch.warps.size());
        // --resume: run, skip (finished with this configuration and these inputs) or refuse.
        int current = 0;
        std::string why;
        if (group.rank() == 0 && opts.resume) {
            current = static_cast<int>(decideOnResume(out, cfgHash, patch, opts.restart, why,
                                                      cfg.getBool("cosmic_rays.detect"), cfgLines));
        }
        parallel::broadcastFromRoot(&group, current);
        if (current == static_cast<int>(OnResume::Refuse)) {
            if (group.rank() == 0) {
                log().error("patch {}: {}", patch.name, why);
                PatchOutcome f = o;
                f.status = "failed";
                f.error = why;
                outcomes.push_back(f);
                ++failed;
            }
            code = std::max(code, static_cast<int>(ExitCode::Config));
            continue;
        }
        if (current == static_cast<int>(OnResume::Skip)) {
            log().debug("patch {}: {} exists with the same config; skipped (--resume)", patch.name, out);
            o.status = "skipped";
            if (group.rank() == 0) {
                pipeline::removeCheckpoints(ckpt.dir, patch.name);  // left if killed before the cleanup
                removeStaleTemporaries(out, ckpt.dir, patch.name);  // e.g. of a killed weight-map writer
                ++skipped;
                PatchOutcome done = finishedFigures(o, previousReport.get(), previousReport.path, cfgHash);
                try {
                    (void)ensureWeightMap(cfg, patch.name, out);
                    (void)ensureQaPicture(cfg, patch.name, out);
                } catch (const Error& e) {
                    log().error("patch {}: {}", patch.name, e.what());
                    done.status = "failed";
                    done.error = e.what();
                    --skipped;
                    ++failed;
                    code = std::max(code, static_cast<int>(e.code()));
                }
                outcomes.push_back(done);
            }
            continue;
        }
        if (group.rank() == 0 && !opts.resume) {  // a plain rerun replaces what is there: say so
            logReplacement(out, cfgHash, cfgLines);
        }
        std::vector<WarpInput> warps;
        for (const auto& w : patch.warps) {
            warps.push_back(WarpInput{w.visit, w.path, w.psfMatched, w.zeroPoint});
        }
        try {
            int stop = stopRequested() ? 1 : 0;
            stop = group.agree(stop == 0) ? 0 : 1;
            if (stop == 1) {
                throwIfStopRequested("before the next patch");
                throw Error("stopped by a signal on another rank; rerun with --resume", ExitCode::Resume);
            }
            if (group.rank() == 0) {
                removeStaleTemporaries(out, ckpt.dir, patch.name);
            }
            const std::int64_t readBefore = io::warpBytesRead();
            const PatchResult r = coaddPatch(patch.name, patch.box, warps, cfg, out, &group, ckpt);
            // coaddPatch returns on every rank of the group alike (its stages agree), so this sum is safe.
            const std::int64_t readHere = group.sum(io::warpBytesRead() - readBefore);
            done += group.rank() == 0 ? 1 : 0;
            o = r;
            o.index = static_cast<std::int64_t>(p);
            o.rank = comm.rank();
            o.status = "done";
            o.warpBytesRead = readHere;
        } catch (const Error& e) {
            failed += group.rank() == 0 ? 1 : 0;
            code = std::max(code, static_cast<int>(e.code()));
            const std::string what = e.what();
            const std::string prefix = "patch " + patch.name + ": ";
            log().error("{}{}", what.rfind(prefix, 0) == 0 ? "" : prefix, what);  // one "patch X:" prefix
            o.status = "failed";
            o.error = what;
        } catch (const std::exception& e) {
            failed += group.rank() == 0 ? 1 : 0;
            code = std::max(code, static_cast<int>(ExitCode::Internal));
            log().error("patch {}: internal error: {}", patch.name, e.what());
            o.status = "failed";
            o.error = std::string("internal error: ") + e.what();
        }
        if (group.rank() == 0) {
            outcomes.push_back(o);
        }
        ++handled;
        if (comm.rank() == 0 && showProgress && (secondsSinceProgress() > 10.0 || handled == mine)) {
            lastProgress = std::chrono::steady_clock::now();
            const double elapsed = std::chrono::duration<double>(lastProgress - t0).count();
            const double rate = static_cast<double>(handled) / std::max(elapsed, 1e-9);
            log().info("progress: group {}: {}/{} patches ({} in the run), {:.2f} patches/min, ETA {:.0f} s",
                       color, handled, mine, manifest.patches.size(), rate * 60.0,
                       static_cast<double>(mine - handled) / std::max(rate, 1e-9));
        }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log().debug("rank summary: {} patches done, {} skipped, {} failed in {:.2f} s", done, skipped, failed,
                seconds);
    const long long allDone = comm.sum(done);
    const long long allSkipped = comm.sum(skipped);
    const long long allFailed = comm.sum(failed);
    const double wall = comm.max(seconds);
    const auto perRank = parallel::gatherToRoot(
        &comm, std::make_pair(seconds, std::make_pair(peakRssBytes(), io::warpBytesRead())));
    if (comm.rank() == 0) {
        double lo = perRank.front().first;
        double hi = lo;
        double sum = 0;
        std::string rss;
        for (std::size_t r = 0; r < perRank.size(); ++r) {
            lo = std::min(lo, perRank[r].first);
            hi = std::max(hi, perRank[r].first);
            sum += perRank[r].first;
            rss += fmt::format("{}r{} {:.1f} MiB", r == 0 ? "" : ", ", r,
                               static_cast<double>(perRank[r].second.first) / (1024.0 * 1024.0));
        }
        log().info("rank timings: min {:.2f} s, mean {:.2f} s, max {:.2f} s; peak RSS: {}", lo,
                   sum / static_cast<double>(perRank.size()), hi, rss);
    }
    int worst = static_cast<int>(comm.max(code));  // every group is done with its patches
    if (comm.rank() == 0) {
        pipeline::removeCheckpointDirIfEmpty(ckpt.dir);
    }
    std::vector<std::vector<PatchOutcome>> all;
    boost::mpi::gather(comm.raw(), outcomes, all, 0);
    if (comm.rank() == 0) {
        std::vector<PatchOutcome> flat;
        for (auto& v : all) {
            flat.insert(flat.end(), v.begin(), v.end());
        }
        std::sort(flat.begin(), flat.end(), [](const auto& a, const auto& b) { return a.index < b.index; });
        long long clipped = 0;
        for (const auto& o : flat) {
            clipped += o.nClippedWarpPixels;
            if (o.status == "done") {
                log().info(
                    "patch {} [r{}]: {}/{} warps used, {} footprints, {} clipped ({} big), {} CLIPPED warp "
                    "pixels, {:.2f} s -> {}",
                    o.name, o.rank, o.nUsed, o.nWarps, o.nFootprints, o.nClippedFootprints, o.nBigFootprints,
                    o.nClippedWarpPixels, o.seconds, o.outputPath);
            } else if (o.status == "skipped") {
                log().info("patch {} [r{}]: output exists with the same configuration; skipped (--resume)",
                           o.name, o.rank);
            }
        }
        log().info(
            "run summary: {} patches coadded, {} skipped (already done), {} failed; {} CLIPPED warp pixels; "
            "{:.2f} s on {} ranks; report in {}",
            allDone, allSkipped, allFailed, clipped, wall, comm.size(), outDir);
        try {
            writeReport(outDir, reportFileName(opts), flat, perRank, wall, cfg, opts, worst);
        } catch (const Error& e) {
            log().error("{}", e.what());
            worst = std::max(worst, static_cast<int>(e.code()));
        }
    }
    boost::mpi::broadcast(comm.raw(), worst, 0);
    return worst;
}

}  // namespace safeclip::app
