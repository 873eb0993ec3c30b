#pragma once
/// @file Signals.h  (parallel layer: the stop flag is read by the pipeline between units of work)
/// SIGTERM / SIGUSR1 (Slurm's --signal, scancel, a time limit) ask every rank to
/// stop at the next unit boundary, keep what is complete, and exit 75 ("resume me").
/// A call that never returns (e.g. a library spinning on a damaged file) cannot reach a boundary:
/// a watchdog thread then ends the process with 75 after a grace period
/// (SAFECLIP_STOP_GRACE_SECONDS, default kDefaultStopGraceSeconds), logging one line.

namespace safeclip::parallel {

inline constexpr double kDefaultStopGraceSeconds = 20.0;

/// What to tell the user after a stop: `run` resumes ("rerun with --resume", the default), `coadd`
/// starts again ("rerun the command").
enum class AfterStop { Resume, Rerun };

/// Install the handlers and start the watchdog thread (idempotent). The handler only sets a
/// lock-free atomic flag; the watchdog polls it every 0.1 s. An unusable
/// SAFECLIP_STOP_GRACE_SECONDS (not a number in [0, 1e6)) is reported on stderr and the default used.
void installStopSignals(AfterStop after = AfterStop::Resume);
/// True once SIGTERM or SIGUSR1 arrived.
bool stopRequested();
/// Throws Error(ExitCode::Resume) when a stop was requested (call between units of work).
void throwIfStopRequested(const char* where);

}  // namespace safeclip::parallel
