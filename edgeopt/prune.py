"""edgeopt.prune(model, sparsity=..., block=...): block magnitude pruning (see edgeopt.passes.prune), and
prune_channels (edgeopt.passes.channels): a physically smaller dense model, ResNet blocks included."""
from edgeopt.passes.channels import prune_channels
from edgeopt.passes.common import callable_module
from edgeopt.passes.prune import (SCOPES, Pruner, block_mask_for, block_scores, expand_blocks, from_gemm_view,
                                  gemm_view, prunable_layers, prune)

__all__ = ["Pruner", "SCOPES", "block_mask_for", "block_scores", "expand_blocks", "from_gemm_view", "gemm_view",
           "prunable_layers", "prune", "prune_channels"]

callable_module(__name__, prune)
