// The thread-local interception scope: while it is open, kInterceptKey is in the thread's
// included dispatch keys (and out of the excluded ones, where autocast keys sit by default).
#pragma once

#include <cstdint>

namespace coreai_opt::eager {

// Opens the scope on this thread (nesting counts depth); the first open registers the key's
// fallthrough fallback if that has not happened yet (ensure_fallback) and saves the key's
// included / excluded bits, the matching last close restores exactly those bits and touches
// no other key.
void open_scope();
void close_scope();

// Depth of the scope on this thread (0: closed).
int64_t scope_depth();

}  // namespace coreai_opt::eager
