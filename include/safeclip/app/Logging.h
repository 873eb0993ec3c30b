#pragma once
/// @file Logging.h  The app layer's names for the rank-tagged logger of parallel/Logging.h.
#include "safeclip/parallel/Logging.h"

namespace safeclip::app {
using parallel::initLogging;
using parallel::log;
}  // namespace safeclip::app
