#include <torch/csrc/autograd/variable.h>

#include <vector>

#include "autograd/differentiable.h"

namespace coreai_opt::autograd {

void non_differentiable(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& args = op.schema().arguments();
  const size_t n = args.size();
  std::vector<at::Tensor> written;
  for (size_t i = 0; i < n; ++i) {
    const auto* info = args[i].alias_info();
    const auto& v = (*stack)[stack->size() - n + i];
    if (info != nullptr && info->isWrite() && v.isTensor()) written.push_back(v.toTensor());
  }
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    op.callBoxed(stack);
  }
  for (const auto& t : written) torch::autograd::impl::bump_version(t);
}

}  // namespace coreai_opt::autograd
