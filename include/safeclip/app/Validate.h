#pragma once
/// @file Validate.h  `safeclip validate`: check warps before a coadd, reporting every problem
/// (one per line: file, problem) instead of stopping at the first. The checks themselves are
/// io::validateWarps (io/WarpValidation.h, also run at the start of coadd/run); this header adds
/// the command's presentation.
#include <string>
#include <vector>

#include "safeclip/io/WarpValidation.h"

namespace safeclip::app {

// The checks live in io; these names keep `app::validateWarps` etc. working for the command and
// its tests.
using io::anyFatal;
using io::validateWarps;
using io::WarpProblem;

/// The problems as an aligned text table (header line, then one line per problem), "" when none.
std::string formatProblems(const std::vector<WarpProblem>& problems);

}  // namespace safeclip::app
