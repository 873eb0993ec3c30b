#pragma once
/// @file Logging.h  The rank-tagged "safeclip" logger (spdlog): one line per event. It lives in the
/// parallel layer because every layer above needs it and it knows the rank; app configures it.
#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace safeclip::parallel {

/// Configure the "safeclip" logger: stderr, pattern "[time] [rN] [level] message".
/// level: trace|debug|info|warn|error|off. Only rank 0 logs at info; other ranks log warn and above
/// unless level is debug or trace. @throws ConfigError on an unknown level.
void initLogging(int rank, const std::string& level);
/// The logger (initLogging must have been called; otherwise a default one is created).
spdlog::logger& log();

}  // namespace safeclip::parallel
