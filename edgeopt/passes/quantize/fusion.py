"""Rewriting the traced graph around the chosen kernels: folded BatchNorms leave the graph, an activation
or residual add goes into the layer's epilogue where the chosen module takes it (else the node stays),
max-pools become edgeopt's channels-last pool, and every layer's module is swapped in."""
from __future__ import annotations

from torch import fx, nn

from edgeopt.nn.pool import MaxPool2d as EdgeoptMaxPool2d
from edgeopt.passes.common import set_submodule
from edgeopt.passes.quantize.candidates import includes_activation
from edgeopt.passes.quantize.layout import takes_residual


def rewrite(gm: fx.GraphModule, layers, modules_for: dict[str, nn.Module]) -> None:
    """`layers` with nodes of gm's graph; modules_for[name]: the module each converted layer runs."""
    modules = dict(gm.named_modules())
    for layer in layers:
        m = modules_for.get(layer.name)
        if m is None:
            continue
        rep = layer.report
        rep.folded_bn = layer.bn_name
        rep.residual_add = False
        rep.activation = None
        if layer.node is None:
            continue
        if layer.bn_node is not None:
            layer.bn_node.replace_all_uses_with(layer.node)
            gm.graph.erase_node(layer.bn_node)
        if layer.add_node is not None and takes_residual(m):
            # one call at the add's place (where both inputs exist): layer(x, residual); the other operand
            # as it is now (a BatchNorm folded since planning is gone from the graph)
            residual = [a for a in layer.add_node.args if a is not layer.node][0]
            with gm.graph.inserting_before(layer.add_node):
                fused = gm.graph.call_module(layer.name, (layer.node.args[0], residual))
            layer.add_node.replace_all_uses_with(fused)
            gm.graph.erase_node(layer.add_node)
            gm.graph.erase_node(layer.node)
            layer.node = fused
            rep.residual_add = True
        if layer.act_node is not None and includes_activation(layer, m):
            layer.act_node.replace_all_uses_with(layer.node)
            gm.graph.erase_node(layer.act_node)
            rep.activation = layer.act
    gm.graph.lint()
    pools = [n for n in gm.graph.nodes if n.op == "call_module" and type(modules.get(n.target)) is nn.MaxPool2d]
    for node in pools:
        pool = modules[node.target]
        if not pool.return_indices:
            set_submodule(gm, node.target, EdgeoptMaxPool2d.from_float(pool))
    for name, m in modules_for.items():
        set_submodule(gm, name, m)
    gm.delete_all_unused_submodules()
    gm.recompile()
