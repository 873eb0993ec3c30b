#pragma once
/// @file AtomicFile.h  The one way every output file is published: written to "<path>.tmp.<pid>" in
/// the same directory, fsynced, renamed over `path`, and the directory fsynced. A reader therefore
/// sees either the previous file or the complete new one, never a partial file. Temporaries of
/// killed writers keep the ".tmp." infix that `removeStaleTemporaries` (app/Runner.cpp) sweeps.
#include <functional>
#include <string>
#include <string_view>

namespace safeclip::io {

/// @brief Name of the temporary that `writeAtomically` uses for `path`: "<path>.tmp.<pid>".
[[nodiscard]] std::string temporaryPathFor(const std::string& path);

/// True when the temporary `tmpPath` ("<path>.tmp.<pid>") may belong to a live writer on this host:
/// its pid is not this process's and the process exists and is not a zombie. Sweeps of stale temporaries skip
/// such files, so a concurrent writer (another run's shard, a `coadd` into the same directory, a run sharing
/// checkpoint.dir) never loses its temporary. (A writer on another host cannot be seen; `run` holds
/// output.dir exclusively against that.)
[[nodiscard]] bool temporaryInUse(const std::string& tmpPath);

/// @brief Publish `path` atomically; for library writers that need a file name (cfitsio, HDF5, Cairo).
///
/// Removes a stale "<path>.tmp.<pid>", calls `writeTo(tmpPath)` (which must create, fill and close
/// that file), fsyncs it, renames it over `path` and fsyncs the directory. On any failure the
/// temporary is removed, the previous `path` (if any) is left untouched and an OutputError is thrown
/// whose message starts with "<path>: " and never names the temporary.
/// @param[in] path     the final file name
/// @param[in] writeTo  writes the complete file at the name it is given; a safeclip::Error it throws
///                     keeps its text (with the temporary's name replaced by `path`)
/// @param[in] what     what the file is, for messages, e.g. "the run report"
/// @throws OutputError "<path>: output path is a directory", "<path>: cannot create: <dir> does not
///         exist" (or "is not a directory"), the text of an Error thrown by `writeTo`, or
///         "<path>: cannot write <what>: <reason>"
/// An existing `path` that is not a regular file (a FIFO, a device, a socket) is refused unless
/// `replaceSpecialFile` (the checkpoint writer: its names are its own).
void writeAtomically(const std::string& path, const std::function<void(const std::string& tmpPath)>& writeTo,
                     const std::string& what, bool replaceSpecialFile = false);

/// @brief Publish `text` as the complete content of `path`, atomically (see `writeAtomically`).
/// @param[in] path  the final file name
/// @param[in] text  the exact bytes to write
/// @param[in] what  what the file is, for messages, e.g. "the manifest"
/// @throws OutputError as `writeAtomically`; e.g. "<path>: cannot write <what>: write failed:
///         <strerror>"
void writeTextAtomically(const std::string& path, std::string_view text, const std::string& what,
                         bool replaceSpecialFile = false);

}  // namespace safeclip::io
