// What the public API's implementation (engine/api_*.cpp) shares: the exception boundary —
// diffuse/diffuse.h promises one exception type, so whatever the engine throws leaves the API as
// diffuse::Error, except an exception thrown by the embedding program's own callback, which is
// carried through the engine untouched and rethrown. An Error keeps its kind (diffuse/error.h).
#pragma once
#include <exception>
#include <filesystem>
#include <new>
#include <string>
#include <utility>

#include "diffuse/diffuse.h"
#include "nn/atomic_file.h"

namespace diffuse::api {

// Wraps an exception from a user callback while it unwinds through engine code. Not derived from
// std::exception, so no engine handler mistakes it for an engine failure.
struct CallbackException {
  std::exception_ptr error;
};

// Runs a user callback; anything it throws travels as CallbackException.
template <typename F>
decltype(auto) call_user(F&& callback) {
  try {
    return std::forward<F>(callback)();
  } catch (...) {
    throw CallbackException{std::current_exception()};
  }
}

// Runs an API call's body, turning every non-Error exception into diffuse::Error("what: ...").
template <typename F>
decltype(auto) boundary(const std::string& what, F&& body) {
  try {
    return std::forward<F>(body)();
  } catch (const Error&) {
    throw;
  } catch (const CallbackException& c) {
    std::rethrow_exception(c.error);
  } catch (const std::bad_alloc&) {
    throw Error(what + ": out of memory");
  } catch (const std::filesystem::filesystem_error& e) {
    throw filesystem_failure(e);
  } catch (const std::exception& e) {
    throw Error(what + ": " + e.what());
  }
}

}  // namespace diffuse::api
