#pragma once
/// @file Signals.h  (parallel layer: the stop flag is read by the pipeline between units of work)
/// SIGTERM / SIGUSR1 (Slurm's --signal, scancel, a time limit) ask every rank to
/// stop at the next unit boundary, keep what is complete, and exit 75 ("resume me").

namespace safeclip::parallel {

/// Install the handlers (idempotent). The handler only sets a flag.
void installStopSignals();
/// True once SIGTERM or SIGUSR1 arrived.
bool stopRequested();
/// Throws Error(ExitCode::Resume) when a stop was requested (call between units of work).
void throwIfStopRequested(const char* where);

}  // namespace safeclip::parallel
