// Tensor roles by name: mixture-of-experts routers are never quantized; the experts and dense MLPs are.
#include "core/checkpoint/model_descriptor.h"

#include "gtest/gtest.h"

namespace lowbit {
namespace {

TEST(ModelDescriptorTest, RoutersAreNeverLinearLayersToQuantize) {
  for (const char* router : {"model.layers.0.block_sparse_moe.gate.weight", "model.layers.3.mlp.gate.weight",
                             "model.layers.3.mlp.shared_expert_gate.weight", "model.layers.1.mlp.router.weight"}) {
    EXPECT_TRUE(IsRouter(router)) << router;
    EXPECT_EQ(RoleOf(router, 2), TensorRole::kOther) << router;
  }
  for (const char* linear : {"model.layers.0.mlp.gate_proj.weight", "model.layers.0.block_sparse_moe.experts.3.w1.weight",
                             "model.layers.2.mlp.experts.7.gate_proj.weight", "model.layers.2.self_attn.q_proj.weight"}) {
    EXPECT_FALSE(IsRouter(linear)) << linear;
    EXPECT_EQ(RoleOf(linear, 2), TensorRole::kLinear) << linear;
  }
  EXPECT_EQ(RoleOf("model.layers.0.self_attn.q_proj.bias", 1), TensorRole::kOther) << "biases are copied through";
  EXPECT_EQ(RoleOf("model.layers.0.self_attn.q_norm.weight", 1), TensorRole::kNorm);
}

}  // namespace
}  // namespace lowbit
