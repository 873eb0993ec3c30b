#pragma once
/// @file FitsFile.h  RAII wrapper around cfitsio's fitsfile* with status -> exception conversion.
#include <fitsio.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace safeclip::io {

/// Turn a non-zero cfitsio status into an InputError (reading) or OutputError (writing) whose
/// one-line message names the file, the action and cfitsio's text.
[[noreturn]] void throwFitsError(const std::string& path, const std::string& action, int status,
                                 bool writing);

class FitsFile {
public:
    enum class Mode { Read, Create };
    /// Opens an existing file for reading, or creates a new one (the path must not exist).
    FitsFile(const std::string& path, Mode mode);
    ~FitsFile();
    FitsFile(const FitsFile&) = delete;
    FitsFile& operator=(const FitsFile&) = delete;
    FitsFile(FitsFile&& other) noexcept;
    FitsFile& operator=(FitsFile&&) = delete;

    [[nodiscard]] fitsfile* get() const { return m_fptr; }
    [[nodiscard]] const std::string& path() const { return m_path; }
    [[nodiscard]] bool writing() const { return m_mode == Mode::Create; }
    /// Throw (with this file's path) if status != 0.
    void check(int status, const std::string& action) const;
    [[nodiscard]] int numHdus() const;
    void moveToHdu(int hdu1) const;  ///< 1-based absolute HDU number
    /// 1-based HDU with EXTNAME == name, if any (does not move the current HDU on failure).
    [[nodiscard]] std::optional<int> findExtension(const std::string& name) const;

    // Header keywords of the current HDU.
    [[nodiscard]] std::optional<std::string> readString(const std::string& key) const;
    [[nodiscard]] std::optional<double> readDouble(const std::string& key) const;
    [[nodiscard]] std::optional<std::int64_t> readInt(const std::string& key) const;
    /// All 80-character cards of the current HDU.
    [[nodiscard]] std::vector<std::string> readCards() const;

    /// Close explicitly, throwing on error (the destructor closes silently).
    void close();

private:
    std::string m_path;
    Mode m_mode;
    fitsfile* m_fptr = nullptr;
};

}  // namespace safeclip::io
