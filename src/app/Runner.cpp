#include "safeclip/app/Runner.h"

#include <chrono>
#include <filesystem>

#include "safeclip/app/Logging.h"
#include "safeclip/app/PatchCoadd.h"
#include "safeclip/geom/Plan.h"
#include "safeclip/io/FitsFile.h"
#include "safeclip/io/Manifest.h"
#include "safeclip/kernel/Error.h"

namespace safeclip::app {

namespace fs = std::filesystem;

namespace {

/// An existing output is reusable when it opens as FITS and carries the same config hash.
bool outputIsCurrent(const std::string& path, const std::string& cfgHash) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
        return false;
    }
    try {
        io::FitsFile f(path, io::FitsFile::Mode::Read);
        f.moveToHdu(1);
        const auto h = f.readString("SCCFGHSH");
        return h && *h == cfgHash && f.findExtension("NIMAGE").has_value();
    } catch (const Error&) {
        return false;
    }
}

}  // namespace

int runManifest(const Config& cfg, const RunOptions& opts, const parallel::Comm& comm) {
    const auto t0 = std::chrono::steady_clock::now();
    int code = 0;
    io::Manifest manifest;
    std::string outDir;
    // Setup errors (bad manifest, unwritable output dir) are detected on every rank alike; agree anyway.
    try {
        const std::string manifestPath = cfg.path("input.manifest");
        if (manifestPath.empty()) {
            throw ConfigError("input.manifest is not set (give it in the config or with --set input.manifest=FILE)");
        }
        manifest = io::readManifest(manifestPath);
        outDir = cfg.path("output.dir");
        if (comm.rank() == 0) {
            std::error_code ec;
            fs::create_directories(outDir, ec);
            if (ec || !fs::is_directory(outDir)) {
                throw OutputError(outDir + ": cannot create output directory: " + ec.message());
            }
        }
    } catch (const Error& e) {
        log().error("{}", e.what());
        code = static_cast<int>(e.code());
    }
    if (!comm.agree(code == 0)) {
        return static_cast<int>(comm.max(code));
    }

    std::vector<double> costs;
    for (const auto& p : manifest.patches) {
        costs.push_back(static_cast<double>(p.box.area()) * static_cast<double>(std::max<std::size_t>(1, p.warps.size())));
    }
    const std::vector<int> owner = geom::assignToRanks(costs, comm.size());
    long long mine = 0;
    for (int r : owner) {
        mine += r == comm.rank() ? 1 : 0;
    }
    if (comm.rank() == 0) {
        log().info("run: {} patches on {} ranks; output {}", manifest.patches.size(), comm.size(), outDir);
    }

    const std::string cfgHash = scienceConfigHash(cfg);
    long long done = 0;
    long long skipped = 0;
    long long failed = 0;
    long long clippedPixels = 0;
    for (std::size_t p = 0; p < manifest.patches.size(); ++p) {
        if (owner[p] != comm.rank()) {
            continue;
        }
        const auto& patch = manifest.patches[p];
        const std::string out = (fs::path(outDir) / (patch.name + ".fits")).string();
        if (opts.resume && outputIsCurrent(out, cfgHash)) {
            log().info("patch {}: {} exists with the same config; skipped (--resume)", patch.name, out);
            ++skipped;
            continue;
        }
        std::vector<WarpInput> warps;
        for (const auto& w : patch.warps) {
            warps.push_back(WarpInput{w.visit, w.path});
        }
        try {
            const PatchResult r = coaddPatch(patch.name, patch.box, warps, cfg, out);
            ++done;
            clippedPixels += r.nClippedWarpPixels;
            log().info("patch {}: done in {:.2f} s: {}/{} warps used, {} footprints, {} clipped, {} CLIPPED warp "
                       "pixels -> {}",
                       patch.name, r.seconds, r.nUsed, r.nWarps, r.nFootprints, r.nClippedFootprints,
                       r.nClippedWarpPixels, out);
        } catch (const Error& e) {
            ++failed;
            code = std::max(code, static_cast<int>(e.code()));
            log().error("patch {}: {}", patch.name, e.what());
        } catch (const std::exception& e) {
            ++failed;
            code = std::max(code, static_cast<int>(ExitCode::Internal));
            log().error("patch {}: internal error: {}", patch.name, e.what());
        }
        if (comm.rank() == 0 && comm.size() == 1) {
            log().info("progress: {}/{} patches", done + skipped + failed, mine);
        }
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    log().debug("rank summary: {} patches done, {} skipped, {} failed in {:.2f} s", done, skipped, failed, seconds);
    const long long allDone = comm.sum(done);
    const long long allSkipped = comm.sum(skipped);
    const long long allFailed = comm.sum(failed);
    const long long allClipped = comm.sum(clippedPixels);
    const double wall = comm.max(seconds);
    const int worst = static_cast<int>(comm.max(code));
    if (comm.rank() == 0) {
        log().info("run summary: {} patches coadded, {} skipped (already done), {} failed; {} CLIPPED warp pixels; "
                   "{:.2f} s on {} ranks",
                   allDone, allSkipped, allFailed, allClipped, wall, comm.size());
    }
    return worst;
}

}  // namespace safeclip::app
