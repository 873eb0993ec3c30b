#include "safeclip/io/Manifest.h"

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>

#include "safeclip/io/AtomicFile.h"
#include "safeclip/io/WarpReader.h"
#include "safeclip/kernel/Error.h"

namespace safeclip::io {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kFormat = "safeclip-manifest";
constexpr int kVersion = 1;

/// One-line ConfigError "PATH: problem".
[[noreturn]] void fail(const std::string& path, const std::string& what) {
    std::string message = path + ": " + what;
    for (char& c : message) {
        if (c == '\n' || c == '\r') {
            c = ' ';
        }
    }
    throw ConfigError(message);
}

std::string inQuotes(const std::string& s) {
    return "'" + s + "'";
}

/// Where a patch is in the file, for messages: patches[i] ('name').
std::string patchLabel(std::size_t index, const std::string& name) {
    std::string label = "patches[" + std::to_string(index) + "]";
    if (!name.empty()) {
        label += " (" + inQuotes(name) + ")";
    }
    return label;
}

/// `s` with control characters written as \xNN, so a message naming it stays one line.
std::string printable(const std::string& s) {
    std::string out;
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) {
            char hex[8];
            std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned>(u));
            out += hex;
        } else {
            out += c;
        }
    }
    return out;
}

/// Why a patch name cannot become the file names made from it ("" when it can): the longest is
/// the decision checkpoint's temporary "<name>.reduced.h5.tmp.<pid>", which must stay within
/// kMaxFileNameBytes.
std::string patchNameProblem(const std::string& name) {
    if (name.empty() || name == "." || name == "..") {
        return "is empty, '.' or '..'";
    }
    if (name.find('/') != std::string::npos) {
        return "contains '/'";
    }
    for (const char c : name) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f) {
            char hex[8];
            std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned>(u));
            return std::string("contains the control character ") + hex;
        }
    }
    if (name.size() > kMaxPatchNameBytes) {
        return "is " + std::to_string(name.size()) + " bytes long; at most " +
               std::to_string(kMaxPatchNameBytes) + " fit in a file name with the suffixes " +
               "(\".fits\", \".reduced.h5\", \".tiles\", \".tmp.<pid>\"; 255 bytes in all)";
    }
    return {};
}

int toInt(const std::string& path, const std::string& where, const json& v) {
    if (!v.is_number_integer()) {
        fail(path, where + " must be an integer");
    }
    if (v.is_number_unsigned()) {
        const auto u = v.get<std::uint64_t>();
        if (u > static_cast<std::uint64_t>(INT_MAX)) {
            fail(path, where + " is out of range");
        }
        return static_cast<int>(u);
    }
    const auto i = v.get<std::int64_t>();
    if (i < INT_MIN || i > INT_MAX) {
        fail(path, where + " is out of range");
    }
    return static_cast<int>(i);
}

kernel::Box parseBox(const std::string& path, const std::string& where, const json& v) {
    if (!v.is_array() || v.size() != 4) {
        fail(path, where + ".box must be 4 integers [x0, y0, width, height]");
    }
    for (const json& e : v) {
        if (!e.is_number_integer()) {
            fail(path, where + ".box must be 4 integers [x0, y0, width, height]");
        }
    }
    const kernel::Box box{toInt(path, where + ".box[0]", v[0]), toInt(path, where + ".box[1]", v[1]),
                          toInt(path, where + ".box[2]", v[2]), toInt(path, where + ".box[3]", v[3])};
    if (box.width <= 0 || box.height <= 0) {
        fail(path, where + ".box width and height must be positive (got " + std::to_string(box.width) + "x" +
                       std::to_string(box.height) + ")");
    }
    // Pixel coordinates are int32: the box's far edges must be too.
    if (static_cast<std::int64_t>(box.x0) + box.width > INT_MAX) {
        fail(path, where +
                       ".box x0 + width = " + std::to_string(static_cast<std::int64_t>(box.x0) + box.width) +
                       " is out of range (at most " + std::to_string(INT_MAX) + ")");
    }
    if (static_cast<std::int64_t>(box.y0) + box.height > INT_MAX) {
        fail(path,
             where + ".box y0 + height = " + std::to_string(static_cast<std::int64_t>(box.y0) + box.height) +
                 " is out of range (at most " + std::to_string(INT_MAX) + ")");
    }
    if (box.area() > kMaxPatchPixels) {
        fail(path, where + ".box area " + std::to_string(box.width) + "x" + std::to_string(box.height) +
                       " = " + std::to_string(box.area()) + " pixels is out of range (at most " +
                       std::to_string(kMaxPatchPixels) + " = 2^31 pixels per patch)");
    }
    return box;
}

/// A warp path of the manifest at `path`, resolved. The rule: a relative path names a file inside
/// the manifest's directory: it may not climb out with "..", and what it resolves to (following
/// symbolic links) must lie inside the (resolved) manifest directory. A warp elsewhere is given by
/// an absolute path, which is taken as it is.
std::string resolve(const std::string& path, const fs::path& baseDir, const std::string& where,
                    const std::string& p) {
    const fs::path warp(p);
    if (warp.is_absolute()) {
        return warp.string();
    }
    const std::string dirName = baseDir.empty() ? std::string(".") : baseDir.string();
    const fs::path norm = warp.lexically_normal();
    if (!norm.empty() && *norm.begin() == "..") {
        fail(path,
             where + ".path " + inQuotes(p) + " escapes the manifest's directory " + dirName +
                 " (relative warp paths must stay inside it; give an absolute path for a warp elsewhere)");
    }
    const fs::path full = baseDir.empty() ? warp : baseDir / warp;
    std::error_code ec1;
    std::error_code ec2;
    const fs::path root = fs::weakly_canonical(fs::absolute(baseDir.empty() ? fs::path(".") : baseDir), ec1);
    const fs::path real = fs::weakly_canonical(fs::absolute(full), ec2);
    if (!ec1 && !ec2) {
        const fs::path rel = real.lexically_relative(root);
        if (rel.empty() || *rel.begin() == "..") {
            fail(path, where + ".path " + inQuotes(p) + " resolves through a symbolic link to " +
                           real.string() + ", outside the manifest's directory " + root.string() +
                           " (give an absolute path for a warp elsewhere)");
        }
    }
    return full.string();
}

}  // namespace

Manifest readManifest(const std::string& path) {
    std::error_code ec;
    if (!fs::exists(path, ec)) {
        fail(path, "no such file");
    }
    if (fs::is_directory(path, ec)) {
        fail(path, "is a directory, not a manifest");
    }
    if (const std::string problem = notRegularFileProblem(path); !problem.empty()) {
        fail(path, problem);  // a FIFO would block in open(2)
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        fail(path, std::string("cannot open: ") + std::strerror(errno));
    }
    json root;
    try {
        root = json::parse(in);
    } catch (const json::exception& e) {
        fail(path, std::string("invalid JSON: ") + e.what());
    }
    if (!root.is_object()) {
        fail(path, "manifest must be a JSON object");
    }
    if (const auto it = root.find("format"); it != root.end()) {
        if (!it->is_string() || it->get<std::string>() != kFormat) {
            fail(path, std::string("\"format\" must be \"") + kFormat + "\"");
        }
    }
    if (const auto it = root.find("version"); it != root.end()) {
        if (!it->is_number_integer() || it->get<std::int64_t>() != kVersion) {
            fail(path, "unsupported manifest version " + it->dump() + " (this safeclip reads version " +
                           std::to_string(kVersion) + ")");
        }
    }
    const auto patchesIt = root.find("patches");
    if (patchesIt == root.end()) {
        fail(path, "missing \"patches\"");
    }
    if (!patchesIt->is_array()) {
        fail(path, "\"patches\" must be an array");
    }
    const fs::path baseDir = fs::path(path).parent_path();
    Manifest manifest;
    std::set<std::string> names;
    std::size_t index = 0;
    for (const json& p : *patchesIt) {
        const std::string at = patchLabel(index, "");
        if (!p.is_object()) {
            fail(path, at + " must be an object");
        }
        const auto nameIt = p.find("name");
        if (nameIt == p.end() || !nameIt->is_string()) {
            fail(path, at + " has no \"name\" string");
        }
        ManifestPatch patch;
        patch.name = nameIt->get<std::string>();
        const std::string where = patchLabel(index, patch.name);
        if (const std::string problem = patchNameProblem(patch.name); !problem.empty()) {
            // printable(): a newline in the name must not forge a log line.
            fail(path, patchLabel(index, printable(patch.name)) +
                           ": patch name is not a plain file name: it " + problem);
        }
        if (!names.insert(patch.name).second) {
            fail(path, "duplicate patch name " + inQuotes(patch.name));
        }
        const auto boxIt = p.find("box");
        if (boxIt == p.end()) {
            fail(path, where + " has no \"box\"");
        }
        patch.box = parseBox(path, where, *boxIt);
        const auto warpsIt = p.find("warps");
        if (warpsIt == p.end() || !warpsIt->is_array()) {
            fail(path, where + " has no \"warps\" array");
        }
        std::size_t w = 0;
        for (const json& warpJson : *warpsIt) {
            const std::string wat = where + ".warps[" + std::to_string(w) + "]";
            if (!warpJson.is_object()) {
                fail(path, wat + " must be an object");
            }
            const auto pathIt = warpJson.find("path");
            if (pathIt == warpJson.end() || !pathIt->is_string() || pathIt->get<std::string>().empty()) {
                fail(path, wat + " has no \"path\" string");
            }
            ManifestWarp warp;
            warp.path = resolve(path, baseDir, wat, pathIt->get<std::string>());
            if (const auto visitIt = warpJson.find("visit"); visitIt != warpJson.end()) {
                if (!visitIt->is_number_integer()) {
                    fail(path, wat + ".visit must be an integer");
                }
                // nlohmann keeps integers above INT64_MAX as unsigned: refuse them, do not wrap.
                if (visitIt->is_number_unsigned() &&
                    visitIt->get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
                    fail(path, wat + ".visit = " + visitIt->dump() + " is out of range (at most 2^63 - 1)");
                }
                warp.visit = visitIt->get<std::int64_t>();
            }
            if (const auto pmIt = warpJson.find("psf_matched"); pmIt != warpJson.end()) {
                if (!pmIt->is_string() || pmIt->get<std::string>().empty()) {
                    fail(path, wat + ".psf_matched must be a non-empty path string");
                }
                warp.psfMatched = resolve(path, baseDir, wat + ".psf_matched", pmIt->get<std::string>());
            }
            if (const auto zpIt = warpJson.find("zero_point"); zpIt != warpJson.end()) {
                const double zp = zpIt->is_number() ? zpIt->get<double>() : 0.0;
                if (!zpIt->is_number() || !(zp > 0.0 && zp < 100.0)) {
                    fail(path, wat + ".zero_point must be an AB zero point in (0, 100) (e.g. 27.0), got " +
                                   zpIt->dump());
                }
                warp.zeroPoint = zp;
            }
            patch.warps.push_back(std::move(warp));
            ++w;
        }
        manifest.patches.push_back(std::move(patch));
        ++index;
    }
    return manifest;
}

void writeManifest(const std::string& path, const Manifest& manifest) {
    json root;
    root["format"] = kFormat;
    root["version"] = kVersion;
    root["patches"] = json::array();
    for (const ManifestPatch& p : manifest.patches) {
        json patch;
        patch["name"] = p.name;
        patch["box"] = json::array({p.box.x0, p.box.y0, p.box.width, p.box.height});
        patch["warps"] = json::array();
        for (const ManifestWarp& w : p.warps) {
            json entry{{"visit", w.visit}, {"path", w.path}};
            if (!w.psfMatched.empty()) {
                entry["psf_matched"] = w.psfMatched;
            }
            if (w.zeroPoint) {
                entry["zero_point"] = *w.zeroPoint;
            }
            patch["warps"].push_back(std::move(entry));
        }
        root["patches"].push_back(std::move(patch));
    }
    const std::string text = root.dump(2) + "\n";

    writeTextAtomically(path, text, "the manifest");
}

}  // namespace safeclip::io
