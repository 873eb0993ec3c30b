/// @file MakeManifest.cpp  `safeclip manifest` (see MakeManifest.h).
#include "safeclip/app/MakeManifest.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "safeclip/io/FitsFile.h"
#include "safeclip/io/Manifest.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/io/WarpValidation.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/parallel/Logging.h"

namespace safeclip::app {

namespace fs = std::filesystem;
using parallel::log;

namespace {

bool isFitsName(const std::string& name) {
    auto endsWith = [&](const std::string& suffix) {
        return name.size() >= suffix.size() &&
               name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    return endsWith(".fits") || endsWith(".fits.fz");
}

/// Files and directories' FITS files, in order; a directory's sorted by name. `fromDir` marks the
/// files found in a directory (a file there that is not a warp is skipped, not an error).
std::vector<std::string> expandInputs(const std::vector<std::string>& inputs,
                                      std::set<std::string>& fromDir) {
    std::vector<std::string> out;
    for (const std::string& in : inputs) {
        std::error_code ec;
        if (fs::is_directory(in, ec)) {
            std::vector<std::string> files;
            for (const auto& e : fs::directory_iterator(in, ec)) {
                if (e.is_regular_file(ec) && isFitsName(e.path().filename().string())) {
                    files.push_back(e.path().string());
                }
            }
            if (ec) {
                throw ConfigError(in + ": cannot list the directory: " + ec.message());
            }
            if (files.empty()) {
                throw ConfigError(in + ": no *.fits or *.fits.fz file in this directory");
            }
            std::sort(files.begin(), files.end());
            fromDir.insert(files.begin(), files.end());
            out.insert(out.end(), files.begin(), files.end());
        } else {
            out.push_back(in);
        }
    }
    if (out.empty()) {
        throw ConfigError("manifest: no input warps");
    }
    return out;
}

/// The path as the manifest writes it: relative to `dir` when inside it, else absolute.
std::string manifestPath(const std::string& path, const fs::path& dir) {
    const fs::path abs = fs::weakly_canonical(fs::absolute(path));
    const fs::path rel = abs.lexically_relative(dir);
    if (!rel.empty() && *rel.begin() != "..") {
        return rel.generic_string();
    }
    return abs.string();
}

}  // namespace

ManifestSummary makeManifest(const MakeManifestOptions& opts) {
    if (opts.out.empty()) {
        throw ConfigError("manifest: --out is required");
    }
    std::error_code ec;
    if (fs::exists(fs::symlink_status(opts.out, ec)) && !opts.overwrite) {
        throw ConfigError(opts.out + ": exists; give --overwrite to replace it");
    }
    const fs::path outDir = fs::weakly_canonical(fs::absolute(opts.out)).parent_path();
    if (!fs::is_directory(outDir, ec)) {
        throw ConfigError(opts.out + ": its directory " + outDir.string() + " does not exist");
    }
    std::set<std::string> fromDir;
    const std::vector<std::string> files = expandInputs(opts.inputs, fromDir);

    // Group by PARENT box, in order of first appearance; headers only.
    struct Group {
        kernel::Box box;
        std::string name;
        std::vector<std::string> paths;
        std::vector<std::optional<std::int64_t>> visits;
        std::set<std::string> filters;
    };
    std::vector<Group> groups;
    std::map<std::tuple<int, int, int, int>, std::size_t> byBox;
    std::vector<std::string> problems;
    for (const std::string& f : files) {
        std::optional<io::WarpReader> r;
        try {
            r.emplace(f);
        } catch (const Error& e) {
            if (fromDir.count(f) != 0) {  // e.g. a truth or coadd file next to the warps
                log().warn("manifest: skipping {} (found in a directory, not a warp: {})", f, e.what());
            } else {
                problems.emplace_back(e.what());
            }
            continue;
        }
        const io::WarpHeader& h = r->header();
        const auto key = std::make_tuple(h.box.x0, h.box.y0, h.box.width, h.box.height);
        auto it = byBox.find(key);
        if (it == byBox.end()) {
            Group g;
            g.box = h.box;
            std::optional<std::string> name;
            if (!opts.nameKey.empty()) {
                try {
                    io::FitsFile ff(f, io::FitsFile::Mode::Read);
                    ff.moveToHdu(1);
                    name = ff.readString(opts.nameKey);
                } catch (const Error&) {
                    name.reset();
                }
                if (!name || name->empty()) {
                    problems.push_back(f + ": no " + opts.nameKey + " card to name its patch (--name-key)");
                    continue;
                }
            }
            if (name) {
                g.name = *name;
            } else {  // (appended piece by piece: GCC 12 warns -Wrestrict on "x" + std::to_string(...))
                g.name = "x";
                g.name += std::to_string(h.box.x0);
                g.name += "_y";
                g.name += std::to_string(h.box.y0);
            }
            it = byBox.emplace(key, groups.size()).first;
            groups.push_back(std::move(g));
        }
        Group& g = groups[it->second];
        g.paths.push_back(f);
        g.visits.push_back(h.visit);
        if (!h.filter.empty()) {
            g.filters.insert(h.filter);
        }
    }
    // Each patch's warps: the header checks of `validate` (WCS, zero point, visits, filters...).
    std::set<std::string> names;
    for (const Group& g : groups) {
        if (!names.insert(g.name).second) {
            problems.push_back("patch name " + g.name + " is given to two boxes (--name-key " + opts.nameKey +
                               ")");
        }
        for (const io::WarpProblem& p : io::validateWarps(g.paths, &g.box, /*pixels=*/false)) {
            if (p.fatal) {
                problems.push_back(p.file + ": " + p.problem);
            }
        }
    }
    if (groups.empty() && problems.empty()) {
        problems.emplace_back("no warp among the inputs");
    }
    if (!problems.empty()) {
        for (const std::string& p : problems) {
            log().error("manifest: {}", p);
        }
        throw InputError("manifest: " + std::to_string(problems.size()) + " problem(s) above; " + opts.out +
                         " not written");
    }
    io::Manifest m;
    ManifestSummary summary;
    for (const Group& g : groups) {
        io::ManifestPatch p;
        p.name = g.name;
        p.box = g.box;
        const bool allVisits =
            std::all_of(g.visits.begin(), g.visits.end(), [](const auto& v) { return v.has_value(); });
        for (std::size_t i = 0; i < g.paths.size(); ++i) {
            io::ManifestWarp w;
            w.path = manifestPath(g.paths[i], outDir);
            w.visit = allVisits ? *g.visits[i] : -1;
            p.warps.push_back(std::move(w));
        }
        std::string filters;
        for (const std::string& f : g.filters) {
            filters += (filters.empty() ? "" : ", ") + f;
        }
        summary.lines.push_back(
            p.name + ": box " + g.box.str() + ", " + std::to_string(g.paths.size()) + " warps" +
            (filters.empty() ? "" : ", filter " + filters) +
            (allVisits ? "" : " (visits numbered by position: not every warp has VISIT)"));
        summary.nWarps += g.paths.size();
        m.patches.push_back(std::move(p));
    }
    io::writeManifest(opts.out, m);
    // The manifest written must read back (paths inside its directory, names, boxes).
    (void)io::readManifest(opts.out);
    return summary;
}

}  // namespace safeclip::app
