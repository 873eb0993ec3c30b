#include "safeclip/io/FitsFile.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <utility>

#include "safeclip/kernel/Error.h"

namespace safeclip::io {

namespace {

/// cfitsio's short text for a status code, with the error-message stack cleared afterwards so
/// that nothing is left behind for a later fits_report_error to print.
std::string statusText(int status) {
    char text[FLEN_STATUS] = {};
    fits_get_errstatus(status, text);
    fits_clear_errmsg();
    return std::string(text);
}

/// Messages must stay on one line: replace any control character of a path by '?'.
std::string oneLine(std::string s) {
    for (char& c : s) {
        if (c == '\n' || c == '\r') {
            c = '?';
        }
    }
    return s;
}

/// True when the file begins with the FITS primary keyword "SIMPLE  =".
bool startsLikeFits(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    char head[9] = {};
    in.read(head, sizeof(head));
    return in.gcount() == sizeof(head) && std::string(head, sizeof(head)) == "SIMPLE  =";
}

[[noreturn]] void throwError(const std::string& message, bool writing) {
    if (writing) {
        throw OutputError(oneLine(message));
    }
    throw InputError(oneLine(message));
}

}  // namespace

void throwFitsError(const std::string& path, const std::string& action, int status, bool writing) {
    // cfitsio says only "error writing to FITS file"; the system's reason (ENOSPC, EFBIG, EDQUOT,
    // EIO) is still in errno right after the failed write.
    const int err = errno;
    std::string why = statusText(status);
    // A full disk can also surface as a read or end-of-file error (the checksum pass reads back
    // what a short write left); name the system's reason whenever it is a storage one.
    const bool storage = err == ENOSPC || err == EFBIG || err == EDQUOT || err == EIO;
    if (writing && err != 0 && (status == WRITE_ERROR || storage)) {
        why += std::string(" (") + std::strerror(err) + ")";
    }
    throwError(path + ": " + action + ": " + why, writing);
}

FitsFile::FitsFile(const std::string& path, Mode mode) : m_path(path), m_mode(mode) {
    namespace fs = std::filesystem;
    int status = 0;
    if (mode == Mode::Read) {
        std::error_code ec;
        const fs::file_status st = fs::status(path, ec);
        if (!fs::exists(st)) {
            throwError(path + ": no such file", false);
        }
        if (fs::is_directory(st)) {
            throwError(path + ": is a directory, not a FITS file", false);
        }
        const auto size = fs::file_size(path, ec);
        if (!ec && size == 0) {
            throwError(path + ": empty file, not a FITS file", false);
        }
        // fits_open_diskfile: the name is taken literally (no "[ext]" or "!" extended syntax).
        if (fits_open_diskfile(&m_fptr, path.c_str(), READONLY, &status) != 0) {
            m_fptr = nullptr;
            if (status == UNKNOWN_REC || status == NO_SIMPLE || status == BAD_SIMPLE) {
                throwError(path + ": not a FITS file (" + statusText(status) + ")", false);
            }
            // A file that cannot be opened at all (no permission, out of file descriptors) says so
            // in the system's words rather than looking like a non-FITS file.
            const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                const int err = errno;
                statusText(status);  // clears the cfitsio message stack
                throwError(path + ": cannot open: " + std::strerror(err), false);
            }
            ::close(fd);
            if (!startsLikeFits(path)) {
                statusText(status);  // clears the cfitsio message stack
                throwError(path + ": not a FITS file (does not start with SIMPLE  =)", false);
            }
            throwFitsError(path, "open", status, false);
        }
    } else {
        if (fits_create_diskfile(&m_fptr, path.c_str(), &status) != 0) {
            m_fptr = nullptr;
            const fs::path parent = fs::path(path).parent_path();
            std::error_code ec;
            if (!parent.empty() && !fs::is_directory(parent, ec)) {
                statusText(status);  // clears the cfitsio message stack
                throwError(path + ": cannot create: " + parent.string() +
                               (fs::exists(parent, ec) ? " is not a directory" : " does not exist"),
                           true);
            }
            if (fs::exists(path, ec)) {
                statusText(status);
                throwError(path + ": cannot create: file already exists", true);
            }
            throwFitsError(path, "create", status, true);
        }
    }
}

FitsFile::~FitsFile() {
    if (m_fptr != nullptr) {
        int status = 0;
        fits_close_file(m_fptr, &status);
        fits_clear_errmsg();
        m_fptr = nullptr;
    }
}

FitsFile::FitsFile(FitsFile&& other) noexcept
    : m_path(std::move(other.m_path)), m_mode(other.m_mode), m_fptr(std::exchange(other.m_fptr, nullptr)) {}

void FitsFile::check(int status, const std::string& action) const {
    if (status != 0) {
        throwFitsError(m_path, action, status, writing());
    }
}

int FitsFile::numHdus() const {
    int status = 0;
    int n = 0;
    fits_get_num_hdus(m_fptr, &n, &status);
    check(status, "count HDUs");
    fits_clear_errmsg();  // the scan to EOF leaves a message on the stack
    return n;
}

void FitsFile::moveToHdu(int hdu1) const {
    int status = 0;
    int current = 0;
    fits_get_hdu_num(m_fptr, &current);
    if (current == hdu1) {
        return;
    }
    fits_movabs_hdu(m_fptr, hdu1, nullptr, &status);
    check(status, "move to HDU " + std::to_string(hdu1));
}

std::optional<int> FitsFile::findExtension(const std::string& name) const {
    int current = 0;
    fits_get_hdu_num(m_fptr, &current);
    int status = 0;
    if (fits_movnam_hdu(m_fptr, ANY_HDU, const_cast<char*>(name.c_str()), 0, &status) == 0) {
        int hdu = 0;
        fits_get_hdu_num(m_fptr, &hdu);
        return hdu;
    }
    fits_clear_errmsg();
    // Files written by older afw versions carry only EXTTYPE: look for that too.
    const int n = numHdus();
    for (int hdu = 1; hdu <= n; ++hdu) {
        status = 0;
        if (fits_movabs_hdu(m_fptr, hdu, nullptr, &status) != 0) {
            fits_clear_errmsg();
            break;
        }
        if (const auto exttype = readString("EXTTYPE"); exttype && *exttype == name) {
            return hdu;
        }
    }
    status = 0;
    fits_movabs_hdu(m_fptr, current, nullptr, &status);
    check(status, "move to HDU " + std::to_string(current));
    return std::nullopt;
}

std::optional<std::string> FitsFile::readString(const std::string& key) const {
    int status = 0;
    char* value = nullptr;
    fits_read_key_longstr(m_fptr, key.c_str(), &value, nullptr, &status);
    std::optional<std::string> result;
    if (status == 0 && value != nullptr) {
        result = std::string(value);
    }
    if (value != nullptr) {
        int freeStatus = 0;
        fits_free_memory(value, &freeStatus);
    }
    if (status == KEY_NO_EXIST || status == VALUE_UNDEFINED) {
        fits_clear_errmsg();
        return std::nullopt;
    }
    check(status, "read keyword " + key);
    if (result) {
        // Trailing blanks of a FITS string value are not significant.
        while (!result->empty() && result->back() == ' ') {
            result->pop_back();
        }
    }
    return result;
}

std::optional<double> FitsFile::readDouble(const std::string& key) const {
    int status = 0;
    double value = 0.0;
    fits_read_key(m_fptr, TDOUBLE, key.c_str(), &value, nullptr, &status);
    if (status == KEY_NO_EXIST || status == VALUE_UNDEFINED) {
        fits_clear_errmsg();
        return std::nullopt;
    }
    check(status, "read keyword " + key);
    return value;
}

std::optional<std::int64_t> FitsFile::readInt(const std::string& key) const {
    int status = 0;
    LONGLONG value = 0;
    fits_read_key(m_fptr, TLONGLONG, key.c_str(), &value, nullptr, &status);
    if (status == KEY_NO_EXIST || status == VALUE_UNDEFINED) {
        fits_clear_errmsg();
        return std::nullopt;
    }
    check(status, "read keyword " + key);
    return static_cast<std::int64_t>(value);
}

std::vector<std::string> FitsFile::readCards() const {
    int status = 0;
    int nKeys = 0;
    fits_get_hdrspace(m_fptr, &nKeys, nullptr, &status);
    check(status, "read header");
    std::vector<std::string> cards;
    cards.reserve(static_cast<std::size_t>(nKeys));
    for (int i = 1; i <= nKeys; ++i) {
        char card[FLEN_CARD] = {};
        fits_read_record(m_fptr, i, card, &status);
        check(status, "read header card " + std::to_string(i));
        cards.emplace_back(card);
    }
    return cards;
}

void FitsFile::close() {
    if (m_fptr == nullptr) {
        return;
    }
    int status = 0;
    fits_close_file(m_fptr, &status);
    m_fptr = nullptr;
    check(status, "close");
}

}  // namespace safeclip::io
