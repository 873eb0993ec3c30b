#pragma once
/// @file Cli.h  The command line (CLI11): coadd, run, simulate, ingest, config, --version.

namespace safeclip::app {

/// Parse argv and run the command. Returns the process exit code (README "Exit codes").
int runCli(int argc, char** argv);

}  // namespace safeclip::app
