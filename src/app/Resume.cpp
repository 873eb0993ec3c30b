/// @file Resume.cpp  What `safeclip run --resume` does with the state a previous run left: the
/// temporaries of killed writers (removed, exactly this writer's names) and existing outputs (whole
/// and current: skipped; damaged: redone; made from another configuration or other inputs: refused
/// unless --restart).
#include "safeclip/app/Resume.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "safeclip/app/Logging.h"
#include "safeclip/io/AtomicFile.h"
#include "safeclip/io/Checkpoint.h"
#include "safeclip/io/ExposureWriter.h"
#include "safeclip/io/FitsFile.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"
#include "safeclip/pipeline/PatchCheckpoint.h"

namespace safeclip::app {

namespace fs = std::filesystem;

namespace {

/// True when `name` is exactly "<base>.tmp.<digits>": the temporary io::temporaryPathFor gives a writer
/// of `base` (io/AtomicFile.h), and nothing else (a finished output of a patch named
/// "<base>.tmp.1" is "<base>.tmp.1.fits" and does not match).
bool isTemporaryOf(const std::string& name, const std::string& base) {
    const std::string prefix = base + ".tmp.";
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) {
        return false;
    }
    return std::all_of(name.begin() + static_cast<std::ptrdiff_t>(prefix.size()), name.end(),
                       [](char c) { return c >= '0' && c <= '9'; });
}

/// True when `name` is a tile checkpoint's name as pipeline::tileCheckpointPath makes it:
/// "tile_<x0>_<y0>_<w>x<h>.h5" (x0, y0 may be negative).
bool isTileCheckpointName(const std::string& name) {
    int x0 = 0;
    int y0 = 0;
    int w = 0;
    int h = 0;
    int end = -1;
    if (std::sscanf(name.c_str(), "tile_%d_%d_%dx%d.h5%n", &x0, &y0, &w, &h, &end) != 4 ||
        end != static_cast<int>(name.size())) {
        return false;
    }
    const kernel::Box b{x0, y0, w, h};
    return name == fs::path(pipeline::tileCheckpointPath(".", "p", b)).filename().string();
}

/// The HDUs (after the primary) a finished coadd of `mode` has, in order (stage "write").
/// The HDUs of a coadd written by pipeline::writeCoadd (CoaddOutput.cpp), in order.
std::vector<std::string> expectedHdus(const std::string& mode, bool cosmicRayStage) {
    std::vector<std::string> hdus = {"IMAGE", "MASK", "VARIANCE", "NIMAGE", "INPUTS"};
    if (mode == "safeclip") {
        hdus.insert(hdus.end(), {"FOOTPRINTS", "CANDIDATES", "CLIPPED_SPANS"});
    } else if (mode == "comparewarp") {
        hdus.insert(hdus.end(), {"FOOTPRINTS", "CLIPPED_SPANS"});
    }
    if (cosmicRayStage) {
        hdus.emplace_back("CR_SPANS");
    }
    hdus.emplace_back("CONFIG");
    return hdus;
}

std::string joined(const std::vector<std::string>& v) {
    std::string s;
    for (const std::string& x : v) {
        s += (s.empty() ? "" : ",") + x;
    }
    return s.empty() ? "none" : s;
}

/// What --resume finds at a patch's output path.
struct OutputCheck {
    enum class Kind { Missing, Current, Damaged, OtherConfig, InputsChanged };
    Kind kind = Kind::Missing;
    std::string why;  ///< one line naming what is wrong (Damaged, OtherConfig, InputsChanged)
};

/// Compares the manifest's warps of a patch with the INPUTS table of its finished output: the same
/// files in the same order, each with the size and mtime it had then; a file whose size is the same
/// but whose mtime differs is read once to compare its CRC with the stored one. Returns what changed
/// ("" when nothing did).
std::string inputsChange(const io::Table& inputs, const io::ManifestPatch& patch) {
    const auto* file = io::column<std::string>(inputs, "file");
    const auto* checksum = io::column<std::string>(inputs, "checksum");
    const auto* size = io::column<std::int64_t>(inputs, "size");
    const auto* mtime = io::column<std::int64_t>(inputs, "mtime_ns");
    if (file == nullptr) {
        return "its INPUTS table has no file column";
    }
    std::vector<std::string> now;
    for (const auto& w : patch.warps) {
        now.push_back(w.path);
    }
    for (const std::string& f : *file) {
        if (std::find(now.begin(), now.end(), f) == now.end()) {
            return f + " was dropped from the manifest";
        }
    }
    for (const std::string& f : now) {
        if (std::find(file->begin(), file->end(), f) == file->end()) {
            return f + " was added to the manifest";
        }
    }
    if (now != *file) {
        return "the manifest lists its warps in another order or more than once (first: " + now.front() + ")";
    }
    for (std::size_t i = 0; i < now.size(); ++i) {
        const std::string& f = now[i];
        const bool known = size != nullptr && mtime != nullptr;
        struct stat st {};
        if (::stat(f.c_str(), &st) != 0) {
            if (known && (*size)[i] < 0) {
                continue;  // could not be stat'ed when the output was made either (a skipped warp)
            }
            return f + ": cannot stat: " + std::strerror(errno);
        }
        const std::int64_t sz = st.st_size;
        const std::int64_t ns =
            static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
        if (known && (*size)[i] == sz && (*mtime)[i] == ns) {
            continue;  // the cheap check: same size and mtime
        }
        if (known && (*size)[i] != sz) {
            return f + ": size " + std::to_string(sz) + " bytes, was " + std::to_string((*size)[i]);
        }
        const std::string stored = checksum != nullptr ? (*checksum)[i] : std::string();
        if (stored.empty()) {
            return f + ": modified (mtime changed) and no checksum was stored";
        }
        std::string crc;
        try {
            crc = io::fileChecksum(f);
        } catch (const Error& e) {
            return e.what();
        }
        if (crc != stored) {
            return f + ": content changed (" + crc + ", was " + stored + ")";
        }
        log().debug("{}: mtime changed but the content is the same ({})", f, crc);
    }
    return "";
}

/// The CONFIG lines of the output at `path` (empty when it has none or cannot be read).
std::vector<std::string> outputConfig(const std::string& path) {
    try {
        const io::Table t = io::readTable(path, "CONFIG");
        if (const auto* lines = io::column<std::string>(t, "line")) {
            return *lines;
        }
    } catch (const Error&) {
    }
    return {};
}

/// "made with a different configuration: <keys>" (or the hash only when the table is missing).
std::string otherConfigWhy(const std::string& path, const std::vector<std::string>& cfgLines) {
    const std::vector<std::string> was = outputConfig(path);
    const std::string diff = was.empty() || cfgLines.empty() ? "" : configDifference(was, cfgLines);
    return "made with a different configuration (" + (diff.empty() ? std::string("SCCFGHSH differs") : diff) +
           ")";
}

/// --resume: is the output at `path` a whole coadd of this configuration made from these inputs?
/// Damage (size, checksums, missing HDUs, unreadable) is told apart from another configuration
/// (a readable file with another SCCFGHSH) and from changed inputs.
OutputCheck checkOutput(const std::string& path, const std::string& cfgHash, const io::ManifestPatch& patch,
                        bool cosmicRayStage, const std::vector<std::string>& cfgLines) {
    using Kind = OutputCheck::Kind;
    std::error_code ec;
    const auto st = fs::symlink_status(path, ec);
    if (ec || !fs::exists(st)) {
        return {Kind::Missing, ""};
    }
    if (!fs::is_regular_file(fs::status(path, ec))) {
        return {Kind::Damaged, "is not a regular file"};
    }
    const io::FitsIntegrity integrity = io::checkFitsIntegrity(path);
    if (!integrity.problem.empty()) {
        return {Kind::Damaged, integrity.problem};
    }
    std::optional<std::string> hash;
    std::string mode;
    try {
        io::FitsFile f(path, io::FitsFile::Mode::Read);
        f.moveToHdu(1);
        hash = f.readString("SCCFGHSH");
        mode = f.readString("SCMODE").value_or("");
    } catch (const Error& e) {
        return {Kind::Damaged, e.what()};
    }
    if (!hash || *hash != cfgHash) {
        return {Kind::OtherConfig, hash ? otherConfigWhy(path, cfgLines)
                                        : "has no SCCFGHSH card (not a coadd of this configuration)"};
    }
    // (Same SCCFGHSH: the output was made with this configuration's cosmic_rays.detect.)
    const std::vector<std::string> want = expectedHdus(mode, cosmicRayStage);
    if (integrity.extnames != want) {
        return {Kind::Damaged, "has HDUs " + joined(integrity.extnames) + ", expected " + joined(want)};
    }
    try {
        const io::Table inputs = io::readTable(path, "INPUTS");
        std::string change = inputsChange(inputs, patch);
        // The patch box and the manifest's visits (when it gives them) decide pixels and tables too.
        const kernel::Box box = io::WarpReader(path).header().box;
        if (change.empty() && !patch.box.empty() && box != patch.box) {
            change =
                "the patch box is " + patch.box.str() + " in the manifest, " + box.str() + " in the output";
        }
        // comparewarp: the PSF-matched companions (named by the manifest, same size and mtime).
        const auto* companion = io::column<std::string>(inputs, "psf_matched");
        const auto* cSize = io::column<std::int64_t>(inputs, "psf_matched_size");
        const auto* cMtime = io::column<std::int64_t>(inputs, "psf_matched_mtime_ns");
        for (std::size_t i = 0; change.empty() && i < patch.warps.size(); ++i) {
            const std::string want = patch.warps[i].psfMatched;
            const std::string was = companion != nullptr && i < companion->size() ? (*companion)[i] : "";
            if (mode != "comparewarp" || (want.empty() && was.empty())) {
                continue;
            }
            if (want != was) {
                change = patch.warps[i].path + ": PSF-matched companion '" + want + "' in the manifest, '" +
                         was + "' in the output";
                continue;
            }
            const auto [size, mtime] = io::fileSizeAndMtime(want);
            if (cSize == nullptr || cMtime == nullptr || (*cSize)[i] != size || (*cMtime)[i] != mtime) {
                change = want + ": PSF-matched companion changed since the output was made (size or mtime)";
            }
        }
        const auto* visits = io::column<std::int64_t>(inputs, "visit");
        for (std::size_t i = 0; change.empty() && visits != nullptr && i < patch.warps.size(); ++i) {
            const std::int64_t want = patch.warps[i].visit;
            if (want >= 0 && i < visits->size() && (*visits)[i] != want) {
                change = patch.warps[i].path + ": visit " + std::to_string(want) + " in the manifest, " +
                         std::to_string((*visits)[i]) + " in the output";
            }
        }
        if (!change.empty()) {
            return {Kind::InputsChanged, change};
        }
    } catch (const Error& e) {
        return {Kind::Damaged, e.what()};
    }
    return {Kind::Current, ""};
}

}  // namespace

/// Temporaries left by a killed writer of this patch (this patch belongs to exactly one group of one
/// job, so no live writer can own them). Exactly the names this patch's writers make, nothing else:
/// "<out>.tmp.<digits>", "<ckdir>/<patch>.reduced.h5.tmp.<digits>" and
/// "<ckdir>/<patch>.tiles/tile_X_Y_WxH.h5.tmp.<digits>".
void removeStaleTemporaries(const std::string& out, const std::string& ckdir, const std::string& patch) {
    std::error_code ec;
    auto sweep = [&](const fs::path& dir, const std::function<bool(const std::string&)>& isOurs) {
        if (!fs::is_directory(dir, ec)) {
            return;
        }
        for (const auto& e : fs::directory_iterator(dir, ec)) {
            const std::string name = e.path().filename().string();
            if (isOurs(name) && e.is_regular_file(ec)) {
                if (io::temporaryInUse(e.path().string())) {
                    log().warn("keeping {}: its writer (pid) is alive on this host", e.path().string());
                    continue;
                }
                log().warn("removing a temporary left by an interrupted writer: {}", e.path().string());
                fs::remove(e.path(), ec);
            }
        }
    };
    const fs::path o(out);
    const std::string outName = o.filename().string();
    // The coadd's and its companions' (weight map, QA picture) temporaries.
    const std::string weightName = o.stem().string() + ".weight.fits";
    const std::string qaName = o.stem().string() + ".qa.png";
    sweep(o.parent_path().empty() ? fs::path(".") : o.parent_path(), [&](const std::string& n) {
        return isTemporaryOf(n, outName) || isTemporaryOf(n, weightName) || isTemporaryOf(n, qaName);
    });
    const std::string reduced = fs::path(pipeline::decisionCheckpointPath(ckdir, patch)).filename().string();
    sweep(fs::path(ckdir), [&](const std::string& n) { return isTemporaryOf(n, reduced); });
    sweep(fs::path(pipeline::tileCheckpointDir(ckdir, patch)), [](const std::string& n) {
        const auto at = n.rfind(".tmp.");
        return at != std::string::npos && isTileCheckpointName(n.substr(0, at)) &&
               isTemporaryOf(n, n.substr(0, at));
    });
}

/// Decides on the group root: a whole, current output is skipped; a damaged one is redone with a
/// warning; one of another configuration or made from other inputs is refused (`why`) unless
/// --restart, which redoes it.
std::string configDifference(const std::vector<std::string>& was, const std::vector<std::string>& now,
                             std::size_t maxKeys) {
    // A number is shown in its shortest form (the CONFIG lines carry 17 digits: 0.59999999999999998
    // is 0.6); anything else as written.
    auto shown = [](const std::string& v) {
        double d = 0;
        const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
        if (ec != std::errc() || end != v.data() + v.size()) {
            return v;
        }
        char buf[32];
        const auto r = std::to_chars(buf, buf + sizeof buf, d);
        return std::string(buf, r.ptr);
    };
    auto parse = [&](const std::vector<std::string>& lines) {
        std::map<std::string, std::string> kv;
        for (const std::string& l : lines) {
            const auto eq = l.find(" = ");
            kv[eq == std::string::npos ? l : l.substr(0, eq)] =
                eq == std::string::npos ? "" : shown(l.substr(eq + 3));
        }
        return kv;
    };
    const auto a = parse(was);
    const auto b = parse(now);
    std::vector<std::string> parts;
    for (const auto& [k, v] : a) {
        const auto it = b.find(k);
        if (it == b.end()) {
            parts.push_back(k + " only there (" + v + ")");
        } else if (it->second != v) {
            parts.push_back(k + " = " + v + " there, " + it->second + " now");
        }
    }
    for (const auto& [k, v] : b) {
        if (a.find(k) == a.end()) {
            parts.push_back(k + " only now (" + v + ")");
        }
    }
    std::string out;
    for (std::size_t i = 0; i < parts.size() && i < maxKeys; ++i) {
        out += (i == 0 ? "" : "; ") + parts[i];
    }
    if (parts.size() > maxKeys) {
        out += "; and " + std::to_string(parts.size() - maxKeys) + " more";
    }
    return out;
}

void logReplacement(const std::string& out, const std::string& cfgHash,
                    const std::vector<std::string>& cfgLines) {
    std::error_code ec;
    if (!fs::is_regular_file(out, ec)) {
        return;
    }
    std::optional<std::string> hash;
    try {
        io::FitsFile f(out, io::FitsFile::Mode::Read);
        f.moveToHdu(1);
        hash = f.readString("SCCFGHSH");
    } catch (const Error&) {
    }
    if (hash && *hash == cfgHash) {
        log().info("{}: replacing it (made with the same configuration; --resume would keep it)", out);
    } else if (hash) {
        log().warn("{}: replacing it: it was {}", out, otherConfigWhy(out, cfgLines));
    } else {
        log().warn("{}: replacing it (not a readable safeclip coadd)", out);
    }
}

OnResume decideOnResume(const std::string& out, const std::string& cfgHash, const io::ManifestPatch& patch,
                        bool restart, std::string& why, bool cosmicRayStage,
                        const std::vector<std::string>& cfgLines) {
    using Kind = OutputCheck::Kind;
    const OutputCheck c = checkOutput(out, cfgHash, patch, cosmicRayStage, cfgLines);
    switch (c.kind) {
        case Kind::Missing:
            return OnResume::Run;
        case Kind::Current:
            return OnResume::Skip;
        case Kind::Damaged:
            log().warn("{}: damaged output ({}); coadding patch {} again", out, c.why, patch.name);
            return OnResume::Run;
        case Kind::OtherConfig:
            why = out + ": exists but was " + c.why + "; rerun with --restart to redo it";
            break;
        case Kind::InputsChanged:
            why = out + ": input changed since it was made: " + c.why + "; rerun with --restart to redo it";
            break;
    }
    if (restart) {
        log().warn("--restart: {}", why);
        return OnResume::Run;
    }
    return OnResume::Refuse;
}

}  // namespace safeclip::app
