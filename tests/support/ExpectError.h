#pragma once
// Checks of the one-line error messages that every safeclip error carries ("<path>: problem"),
// shared by the unit tests.
#include <gtest/gtest.h>

#include <functional>
#include <string>

namespace safeclip::test {

/// The message of the E that `fn` throws; "" and a test failure when it throws nothing. (Any other
/// exception propagates and fails the test.)
template <class E>
std::string errorMessageOf(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const E& e) {
        return e.what();
    }
    ADD_FAILURE() << "no exception of the expected type thrown";
    return {};
}

/// `fn` must throw an E whose message is one line, names `path` and contains `word`. Returns the
/// message ("" when nothing was thrown) for further checks.
template <class E>
std::string expectErrorNaming(const std::function<void()>& fn, const std::string& path,
                              const std::string& word) {
    const std::string what = errorMessageOf<E>(fn);
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find(word), std::string::npos) << "expected '" << word << "' in: " << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    return what;
}

}  // namespace safeclip::test
