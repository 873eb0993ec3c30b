#pragma once
/// @file Error.h  Exception hierarchy shared by every layer. Each error maps to a documented exit
/// code (README "Exit codes"); messages are one line and name the file/key and the problem.
#include <stdexcept>
#include <string>

namespace safeclip {

/// Documented process exit codes (README).
enum class ExitCode : int {
    Ok = 0,
    Usage = 1,     ///< bad command line
    Config = 2,    ///< bad configuration or manifest
    Input = 3,     ///< unreadable or invalid input warp
    Output = 4,    ///< output cannot be written
    Internal = 5,  ///< bug or unexpected failure
    Resume = 75,   ///< interrupted; rerun with --resume (EX_TEMPFAIL)
};

/// Base class of all safeclip errors.
class Error : public std::runtime_error {
public:
    explicit Error(const std::string& what, ExitCode code = ExitCode::Internal)
        : std::runtime_error(what), m_code(code) {}
    [[nodiscard]] ExitCode code() const noexcept { return m_code; }

private:
    ExitCode m_code;
};

/// A parameter or configuration value is invalid.
class ConfigError : public Error {
public:
    explicit ConfigError(const std::string& what) : Error(what, ExitCode::Config) {}
};
/// An input file is missing, unreadable or invalid. Message starts with the path.
class InputError : public Error {
public:
    explicit InputError(const std::string& what) : Error(what, ExitCode::Input) {}
};
/// An output file cannot be written.
class OutputError : public Error {
public:
    explicit OutputError(const std::string& what) : Error(what, ExitCode::Output) {}
};
/// Precondition violated by a caller (programming error).
class InvalidParameter : public Error {
public:
    explicit InvalidParameter(const std::string& what) : Error(what, ExitCode::Internal) {}
};

}  // namespace safeclip
