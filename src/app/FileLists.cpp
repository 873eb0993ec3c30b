/// @file FileLists.cpp  `@LIST` and `--files-from` (see FileLists.h).
#include "safeclip/app/FileLists.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <istream>

#include "safeclip/kernel/Error.h"

namespace safeclip::app {

namespace {

std::string trim(const std::string& s) {
    const char* blanks = " \t\r\n\f\v";
    const std::size_t a = s.find_first_not_of(blanks);
    if (a == std::string::npos) {
        return "";
    }
    return s.substr(a, s.find_last_not_of(blanks) - a + 1);
}

/// The paths of one list file ("-" = standard input); `how` names it in messages.
std::vector<std::string> readList(const std::string& list, const std::string& how) {
    std::ifstream file;
    std::istream* in = &std::cin;
    if (list != "-") {
        file.open(list);
        if (!file) {
            throw ConfigError(list + ": cannot read the file list given as " + how + ": " +
                              std::strerror(errno));
        }
        in = &file;
    }
    std::vector<std::string> out;
    std::string line;
    while (std::getline(*in, line)) {
        const std::string p = trim(line);
        if (!p.empty() && p[0] != '#') {
            out.push_back(p);
        }
    }
    if (in->bad()) {
        throw ConfigError(list + ": error reading the file list given as " + how);
    }
    if (out.empty()) {
        throw ConfigError((list == "-" ? std::string("standard input") : list) + ": the file list given as " +
                          how + " holds no path (one path per line; '#' starts a comment)");
    }
    return out;
}

}  // namespace

std::vector<std::string> expandFileLists(const std::vector<std::string>& args, const std::string& filesFrom) {
    std::vector<std::string> out;
    for (const std::string& a : args) {
        if (a.size() > 1 && a[0] == '@') {
            const std::vector<std::string> paths = readList(a.substr(1), a);
            out.insert(out.end(), paths.begin(), paths.end());
        } else {
            out.push_back(a);
        }
    }
    if (!filesFrom.empty()) {
        const std::vector<std::string> paths = readList(filesFrom, "--files-from " + filesFrom);
        out.insert(out.end(), paths.begin(), paths.end());
    }
    if (out.empty()) {
        throw ConfigError("no input files: give them as arguments, @LIST or --files-from LIST");
    }
    return out;
}

}  // namespace safeclip::app
