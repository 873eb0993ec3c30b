/// @file OutputGuards.cpp  Outputs never replace inputs; one run at a time per output.dir.
#include "safeclip/app/OutputGuards.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>

#include "safeclip/kernel/Error.h"

namespace safeclip::app {

namespace fs = std::filesystem;

namespace {

/// Device and inode of `path` (symbolic links followed), if it exists.
std::optional<std::pair<dev_t, ino_t>> fileIdentity(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        return std::nullopt;
    }
    return std::make_pair(st.st_dev, st.st_ino);
}

std::string normalizedPath(const std::string& path) {
    std::error_code ec;
    fs::path p = fs::absolute(path, ec);
    if (ec) {
        p = path;
    }
    const fs::path canon = fs::weakly_canonical(p, ec);
    return (ec ? p.lexically_normal() : canon).string();
}

/// The text of a lock file (its holder), one line, or "".
std::string lockHolder(int fd) {
    char buf[512] = {};
    const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    std::string text(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
        text.pop_back();
    }
    for (char& c : text) {
        const auto u = static_cast<unsigned char>(c);
        c = u < 0x20 || u == 0x7f ? ' ' : c;
    }
    return text;
}

/// "host H, pid P, started T" from a lock file's "H P T".
std::string describeHolder(const std::string& text) {
    std::istringstream in(text);
    std::string host;
    std::string pid;
    std::string started;
    if (!(in >> host >> pid >> started)) {
        return text.empty() ? "holder unknown" : "holder " + text;
    }
    return "host " + host + ", pid " + pid + ", started " + started;
}

int openLockFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        throw OutputError(path + ": cannot open the output directory's lock file: " + std::strerror(errno));
    }
    return fd;
}

void writeHolder(int fd, const std::string& path) {
    const std::string text = OutputDirLock::holderText() + "\n";
    if (::ftruncate(fd, 0) != 0 ||
        ::pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
        throw OutputError(path + ": cannot write the lock file: " + std::strerror(errno));
    }
}

}  // namespace

std::pair<std::string, std::string> outputReplacingInput(const std::vector<std::string>& outputs,
                                                         const std::vector<std::string>& inputs) {
    std::map<std::pair<dev_t, ino_t>, std::string> byId;
    std::map<std::string, std::string> byPath;
    for (const std::string& in : inputs) {
        if (const auto id = fileIdentity(in)) {
            byId.emplace(*id, in);
        }
        byPath.emplace(normalizedPath(in), in);
    }
    for (const std::string& out : outputs) {
        if (const auto id = fileIdentity(out)) {
            if (const auto it = byId.find(*id); it != byId.end()) {
                return {out, it->second};
            }
        }
        if (const auto it = byPath.find(normalizedPath(out)); it != byPath.end()) {
            return {out, it->second};
        }
    }
    return {};
}

std::string OutputDirLock::holderText() {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') {
        std::snprintf(host, sizeof host, "unknown-host");
    }
    static const std::time_t start = std::time(nullptr);  // first call: before any work
    std::tm tm{};
    ::gmtime_r(&start, &tm);
    char when[32] = {};
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return std::string(host) + " " + std::to_string(::getpid()) + " " + when;
}

OutputDirLock::OutputDirLock(const std::string& dir, int shardIndex, int shardCount) {
    const std::string dirLock = (fs::path(dir) / ".safeclip.lock").string();
    m_exclusive = shardCount <= 1;
    m_dirFd = openLockFile(dirLock);
    auto refuse = [&](int fd, const std::string& path, const std::string& extra) {
        const std::string holder = lockHolder(fd);
        throw OutputError(dir + ": in use by another safeclip run (" +
                          (holder.empty() ? extra : describeHolder(holder)) + "; lock " + path +
                          "); wait for it to end, or give another output.dir");
    };
    try {
        if (::flock(m_dirFd, (m_exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
            if (errno != EWOULDBLOCK) {
                throw OutputError(dirLock + ": cannot lock: " + std::strerror(errno));
            }
            refuse(m_dirFd, dirLock,
                   "sharded runs: see " + (fs::path(dir) / ".safeclip.shard-*.lock").string());
        }
        if (m_exclusive) {
            writeHolder(m_dirFd, dirLock);
            return;
        }
        // Shared: no unsharded run holds it, so any text in it is stale.
        (void)::ftruncate(m_dirFd, 0);
        // Shards of another split (0/2 beside 0/3) would coadd the same patches twice: while a shard
        // of another count holds its lock, refuse. The check and our own lock are made under a short
        // exclusive lock on .safeclip.shards.lock, so two runs of different counts cannot both pass.
        const std::string mutexPath = (fs::path(dir) / ".safeclip.shards.lock").string();
        const int mutexFd = openLockFile(mutexPath);
        struct Release {
            int fd;
            ~Release() {
                ::flock(fd, LOCK_UN);
                ::close(fd);
            }
        } release{mutexFd};
        if (::flock(mutexFd, LOCK_EX) != 0) {
            throw OutputError(mutexPath + ": cannot lock: " + std::strerror(errno));
        }
        const std::string ownSuffix = "-of-" + std::to_string(shardCount) + ".lock";
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(dir, ec)) {
            const std::string name = e.path().filename().string();
            if (name.rfind(".safeclip.shard-", 0) != 0 || name.find("-of-") == std::string::npos ||
                name.size() < 5 || name.substr(name.size() - 5) != ".lock" ||
                (name.size() >= ownSuffix.size() &&
                 name.substr(name.size() - ownSuffix.size()) == ownSuffix)) {
                continue;
            }
            const int fd = ::open(e.path().c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
            if (fd < 0) {
                continue;
            }
            if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
                const std::string holder = lockHolder(fd);
                ::close(fd);
                throw OutputError(dir + ": a shard of another split is running here (" +
                                  (holder.empty() ? std::string("holder unknown") : describeHolder(holder)) +
                                  "; lock " + e.path().string() + "): shards of " +
                                  std::to_string(shardCount) +
                                  " would coadd its patches again; wait for it, or use the same --shard K/N");
            }
            ::flock(fd, LOCK_UN);
            ::close(fd);
        }
        const std::string shardLock = (fs::path(dir) / (".safeclip.shard-" + std::to_string(shardIndex) +
                                                        "-of-" + std::to_string(shardCount) + ".lock"))
                                          .string();
        m_shardFd = openLockFile(shardLock);
        if (::flock(m_shardFd, LOCK_EX | LOCK_NB) != 0) {
            if (errno != EWOULDBLOCK) {
                throw OutputError(shardLock + ": cannot lock: " + std::strerror(errno));
            }
            refuse(m_shardFd, shardLock, "holder unknown");
        }
        writeHolder(m_shardFd, shardLock);
    } catch (...) {
        if (m_shardFd >= 0) {
            ::close(m_shardFd);
        }
        ::close(m_dirFd);
        throw;
    }
}

OutputDirLock::~OutputDirLock() {
    // Empty the holder text while still holding the lock, so it never names a finished run.
    if (m_shardFd >= 0) {
        (void)::ftruncate(m_shardFd, 0);
        ::close(m_shardFd);
    }
    if (m_dirFd >= 0) {
        if (m_exclusive) {
            (void)::ftruncate(m_dirFd, 0);
        }
        ::close(m_dirFd);
    }
}

/// Exit 2 when a patch's output (or the report or the lock file) is, or would replace, a warp of
/// the manifest (any patch's): run would overwrite its own input.
void refuseOutputsThatAreInputs(const io::Manifest& manifest, const std::string& outDir) {
    std::vector<std::string> outputs{(fs::path(outDir) / "report.json").string(),
                                     (fs::path(outDir) / ".safeclip.lock").string()};
    std::vector<std::string> inputs;
    for (const auto& p : manifest.patches) {
        outputs.push_back((fs::path(outDir) / (p.name + ".fits")).string());
        for (const auto& w : p.warps) {
            inputs.push_back(w.path);
            if (!w.psfMatched.empty()) {  // a PSF-matched companion is an input too (comparewarp)
                inputs.push_back(w.psfMatched);
            }
        }
    }
    const auto [out, in] = outputReplacingInput(outputs, inputs);
    if (!out.empty()) {
        throw ConfigError(out + ": output would replace the input warp " + in +
                          " (output.dir holds warps of the manifest; choose another output.dir)");
    }
}

}  // namespace safeclip::app
