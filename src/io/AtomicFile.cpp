#include "safeclip/io/AtomicFile.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "safeclip/kernel/Error.h"

namespace safeclip::io {

namespace {

namespace fs = std::filesystem;

/// The failure of one step of the publication; turned into "<path>: cannot write <what>: <reason>".
struct StepFailure {
    std::string reason;
};

/// fsync a file by path. Throws StepFailure.
void fsyncFile(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        throw StepFailure{std::string("cannot open for fsync: ") + std::strerror(errno)};
    }
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0) {
        throw StepFailure{std::string("fsync failed: ") + std::strerror(err)};
    }
}

/// fsync a directory, best effort: some file systems cannot open or fsync a directory.
void fsyncDirectory(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        ::fsync(fd);
        ::close(fd);
    }
}

/// `message` with every occurrence of `from` replaced by `to`.
std::string replaceAll(std::string message, const std::string& from, const std::string& to) {
    for (std::size_t at = message.find(from); at != std::string::npos;
         at = message.find(from, at + to.size())) {
        message.replace(at, from.size(), to);
    }
    return message;
}

}  // namespace

std::string temporaryPathFor(const std::string& path) {
    return path + ".tmp." + std::to_string(::getpid());
}

bool temporaryInUse(const std::string& tmpPath) {
    const auto at = tmpPath.rfind(".tmp.");
    if (at == std::string::npos) {
        return false;
    }
    const std::string digits = tmpPath.substr(at + 5);
    if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) {
        return false;
    }
    const auto pid = static_cast<pid_t>(std::stol(digits));
    if (pid <= 0 || pid == ::getpid()) {
        return false;
    }
    if (!(::kill(pid, 0) == 0 || errno == EPERM)) {
        return false;
    }
    // A zombie (killed, not yet reaped: in a container whose PID 1 does not reap orphans it can stay
    // for good) still answers kill(pid, 0) but writes nothing: its temporary is stale. State is the
    // field after the last ')' of /proc/<pid>/stat; without /proc the process counts as alive.
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (std::getline(stat, line)) {
        const auto close = line.rfind(')');
        if (close != std::string::npos && close + 2 < line.size()) {
            const char state = line[close + 2];
            return state != 'Z' && state != 'X';
        }
    }
    return true;
}

void writeAtomically(const std::string& path, const std::function<void(const std::string& tmpPath)>& writeTo,
                     const std::string& what, bool replaceSpecialFile) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
        throw OutputError(path + ": output path is a directory");
    }
    const fs::path parent = fs::path(path).parent_path();
    if (!parent.empty() && !fs::is_directory(parent, ec)) {
        throw OutputError(path + ": cannot create: " + parent.string() +
                          (fs::exists(parent, ec) ? " is not a directory" : " does not exist"));
    }
    // Never replace a FIFO, a device or a socket by a regular file (`-o /dev/null --overwrite`).
    const auto target = fs::status(path, ec);
    if (!replaceSpecialFile && !ec && fs::exists(target) && !fs::is_regular_file(target)) {
        throw OutputError(path + ": exists and is not a regular file; refusing to replace it");
    }
    // The system's reason when the directory cannot take a new file (read-only file system, ...).
    if (::access(parent.empty() ? "." : parent.c_str(), W_OK) != 0) {
        throw OutputError(path + ": cannot write " + what +
                          ": cannot create the temporary file: " + std::strerror(errno));
    }
    const std::string tmp = temporaryPathFor(path);
    auto removeTmp = [&tmp]() {
        std::error_code ignored;
        fs::remove(tmp, ignored);
    };
    // Messages name the final file, never the temporary.
    auto outputError = [&](const std::string& message) {
        std::string text = replaceAll(message, tmp, path);
        if (text.compare(0, path.size() + 1, path + ":") != 0) {
            text = path + ": cannot write " + what + ": " + text;
        }
        return OutputError(text);
    };
    removeTmp();  // a stale temporary of a killed process with the same pid
    try {
        writeTo(tmp);
        fsyncFile(tmp);
        if (std::rename(tmp.c_str(), path.c_str()) != 0) {
            throw StepFailure{std::string("cannot rename temporary file into place: ") +
                              std::strerror(errno)};
        }
    } catch (const StepFailure& f) {
        removeTmp();
        throw outputError(f.reason);
    } catch (const Error& e) {
        removeTmp();
        throw outputError(e.what());
    } catch (const std::exception& e) {
        removeTmp();
        throw outputError(e.what());
    } catch (...) {
        removeTmp();
        throw;
    }
    fsyncDirectory(parent.empty() ? std::string(".") : parent.string());
}

void writeTextAtomically(const std::string& path, std::string_view text, const std::string& what,
                         bool replaceSpecialFile) {
    writeAtomically(
        path,
        [&](const std::string& tmp) {
            const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
            if (fd < 0) {
                throw StepFailure{std::string("cannot create the temporary file: ") + std::strerror(errno)};
            }
            std::size_t done = 0;
            while (done < text.size()) {
                const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
                if (n < 0) {
                    if (errno == EINTR) {
                        continue;
                    }
                    const int err = errno;
                    ::close(fd);
                    throw StepFailure{std::string("write failed: ") + std::strerror(err)};
                }
                done += static_cast<std::size_t>(n);
            }
            if (::close(fd) != 0) {
                throw StepFailure{std::string("close failed: ") + std::strerror(errno)};
            }
        },
        what, replaceSpecialFile);
}

}  // namespace safeclip::io
