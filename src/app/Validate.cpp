/// @file Validate.cpp  The presentation of `safeclip validate` (the checks are io::validateWarps).
#include "safeclip/app/Validate.h"

#include <algorithm>
#include <string>
#include <vector>

namespace safeclip::app {

std::string formatProblems(const std::vector<WarpProblem>& problems) {
    if (problems.empty()) {
        return {};
    }
    std::size_t w = 4;
    for (const auto& p : problems) {
        w = std::max(w, p.file.size());
    }
    auto pad = [](std::string s, std::size_t n) {
        s.resize(std::max(n, s.size()), ' ');
        return s;
    };
    std::string out = pad("file", w) + "  " + pad("severity", 8) + "  problem\n";
    for (const auto& p : problems) {
        out += pad(p.file, w) + "  " + pad(p.fatal ? "error" : "warning", 8) + "  " + p.problem + "\n";
    }
    return out;
}

}  // namespace safeclip::app
