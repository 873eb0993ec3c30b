#pragma once
/// @file Signals.h  The app layer's names for the stop flag of parallel/Signals.h.
#include "safeclip/parallel/Signals.h"

namespace safeclip::app {
using parallel::installStopSignals;
using parallel::stopRequested;
using parallel::throwIfStopRequested;
}  // namespace safeclip::app
