#pragma once
/// @file FileLists.h  Input lists on the command line: `@LIST` arguments and `--files-from LIST`
/// for `coadd`, `validate`, `ingest` and `qa` (issue 16: a survey's warps are too many to type).
///
/// A list file holds one path per line. Leading and trailing blanks are dropped; empty lines and
/// lines starting with '#' are skipped; nothing else is interpreted (no globbing, no nested
/// `@`: a line "@x" is the file "@x"). Relative paths are relative to the current directory, as
/// if typed on the command line (the paths `ls` or `find` print). LIST "-" is standard input. A
/// file whose name starts with '@' is given as "./@name".
#include <string>
#include <vector>

namespace safeclip::app {

/// The arguments with every `@LIST` replaced by the paths in LIST, in place, then the paths of
/// `filesFrom` (when not empty) appended.
/// @throws ConfigError naming the list when it cannot be read or holds no path, or when the
///         result is empty ("no input files").
std::vector<std::string> expandFileLists(const std::vector<std::string>& args, const std::string& filesFrom);

}  // namespace safeclip::app
