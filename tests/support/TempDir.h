#pragma once
// A fresh scratch directory per test, removed with its contents at the end (shared by the unit tests).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>

namespace safeclip::test {

class TempDir {
public:
    TempDir() {
        static int counter = 0;
        std::random_device rd;
        m_path =
            std::filesystem::temp_directory_path() / ("safeclip-test-" + std::to_string(::getpid()) + "-" +
                                                      std::to_string(counter++) + "-" + std::to_string(rd()));
        std::filesystem::create_directories(m_path);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(m_path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    [[nodiscard]] const std::filesystem::path& path() const { return m_path; }
    /// Path of `name` inside the directory.
    [[nodiscard]] std::string file(const std::string& name) const { return (m_path / name).string(); }
    /// Write `text` to `name` and return its path.
    [[nodiscard]] std::string write(const std::string& name, const std::string& text) const {
        const std::filesystem::path p = m_path / name;
        std::ofstream(p) << text;
        return p.string();
    }
    /// File names in the directory.
    [[nodiscard]] std::set<std::string> list() const {
        std::set<std::string> names;
        for (const auto& e : std::filesystem::directory_iterator(m_path)) {
            names.insert(e.path().filename().string());
        }
        return names;
    }

private:
    std::filesystem::path m_path;
};

}  // namespace safeclip::test
