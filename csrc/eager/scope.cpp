#include "eager/scope.h"

#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Exception.h>

#include "eager/interceptor.h"
#include "eager/key.h"

namespace coreai_opt::eager {

namespace {

struct ScopeState {
  int64_t depth = 0;
  bool was_included = false;
  bool was_excluded = false;
};

thread_local ScopeState t_scope;

}  // namespace

void open_scope() {
  if (t_scope.depth++ > 0) {
    return;
  }
  // With the key included and no fallback registered, every op would fail to dispatch.
  ensure_fallback();
  t_scope.was_included = c10::impl::tls_is_dispatch_key_included(kInterceptKey);
  t_scope.was_excluded = c10::impl::tls_is_dispatch_key_excluded(kInterceptKey);
  c10::impl::tls_set_dispatch_key_included(kInterceptKey, true);
  c10::impl::tls_set_dispatch_key_excluded(kInterceptKey, false);
}

void close_scope() {
  TORCH_CHECK(t_scope.depth > 0,
              "coreai_opt eager: interception scope closed more often than opened");
  if (--t_scope.depth > 0) {
    return;
  }
  c10::impl::tls_set_dispatch_key_included(kInterceptKey, t_scope.was_included);
  c10::impl::tls_set_dispatch_key_excluded(kInterceptKey, t_scope.was_excluded);
}

int64_t scope_depth() { return t_scope.depth; }

}  // namespace coreai_opt::eager
