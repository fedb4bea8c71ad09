"""The one int8 lowering for dense, block-sparse and low-rank layers: identical numbers whichever kernel
runs a layer, GPTQ that keeps a pruned layer's zeros, the measured choice, forced choices, the report's
MACs / bytes / SQNR / times, shared pieces (timing, MACs)."""
import math

import pytest
import torch
from torch import nn

import edgeopt
from edgeopt.models import get_model
from edgeopt.nn import LowRankLinear, QuantConv2d, SparseConv2d, SparseLinear
from edgeopt.nn._qparams import WEIGHT_MAX
from edgeopt.perf.cost import macs_per_sample, weight_bytes
from edgeopt.passes.quantize import Lowering
from edgeopt.passes.quantize.candidates import FLOAT_MARGIN, choose
from edgeopt.passes.quantize.gptq import gptq_round
from edgeopt.passes.timing import time_candidates


def pruned_resnet(sparsity=0.7, seed=0):
    torch.manual_seed(seed)
    model = get_model("resnet10_cifar_slim").eval()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    edgeopt.prune(model, sparsity, block=(16, 4), min_weights=1024).remove()
    return model


def data(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 32, 32, generator=g) for _ in range(n)]


@pytest.mark.parametrize("u8", [False, True])
def test_sparse_and_dense_int8_give_the_same_numbers(u8):
    """One rounding, one range, one epilogue: a model lowered to the sparse int8 kernels equals the same
    model lowered to the dense ones bit for bit, through BatchNorm folding, fused ReLUs and residual adds."""
    model = pruned_resnet()
    lowering = Lowering(model, data(), measure=False, progress=False, u8_between_layers=u8)
    pruned = [layer.name for layer in lowering.layers if "sparse int8" in layer.candidates]
    assert len(pruned) >= 8
    x = torch.randn(3, 3, 32, 32)
    sparse = lowering.assemble({name: "sparse int8" for name in pruned})
    assert all(isinstance(sparse.get_submodule(n), (SparseConv2d, SparseLinear)) for n in pruned)
    rows = {r.name: r for r in lowering.layers}
    # the sparse convs take the residual adds and the uint8 hand-offs the dense ones take
    assert rows["layer2.0.conv2"].report.residual_add and rows["layer2.0.conv2"].report.activation == "relu"
    assert rows["layer2.0.conv1"].report.u8_output == u8 and rows["layer2.0.conv1"].report.channels_last_output
    with torch.no_grad():
        y_sparse = sparse(x).clone()
    dense = lowering.assemble({name: "dense int8" for name in pruned})
    assert all(isinstance(dense.get_submodule(n), QuantConv2d) for n in pruned if n != "fc")
    with torch.no_grad():
        assert torch.equal(dense(x), y_sparse)


def test_gptq_keeps_pruned_zeros_and_lowers_the_error():
    torch.manual_seed(0)
    w = torch.randn(32, 64)
    mask = torch.rand(32, 64) > 0.6
    w = w * mask
    x = torch.randn(512, 64) @ torch.randn(64, 64) * 0.3  # correlated inputs: where GPTQ pays
    h = x.T @ x
    q = gptq_round(w, h, WEIGHT_MAX, keep_zeros=True)
    assert (q[~mask] == 0).all()
    scale = w.abs().amax(1, keepdim=True) / WEIGHT_MAX
    steps = q / scale
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.abs().max() <= WEIGHT_MAX + 1e-4
    nearest = torch.round(w / scale).clamp(-WEIGHT_MAX, WEIGHT_MAX) * scale
    assert ((x @ (q - w).T).pow(2).mean()) < ((x @ (nearest - w).T).pow(2).mean())
    spread = gptq_round(w, h, WEIGHT_MAX)  # without keep_zeros the error spreads into the zeros
    assert (spread[~mask] != 0).any()


def test_measured_choice_follows_the_rule_and_forced_kernels_are_kept():
    model = pruned_resnet(0.85)
    lowering = Lowering(model, data(1), measure=True, progress=False, repeats=2,
                        kernels={"layer1.0.conv1": "dense int8"})
    for layer in lowering.layers:
        if layer.kernel is None:
            continue
        times = layer.report.kernel_us
        if layer.name == "layer1.0.conv1":
            assert layer.kernel == "dense int8" and not times  # forced: not timed
            continue
        assert set(times) == set(layer.candidates)
        int8 = {k: v for k, v in times.items() if k.endswith("int8")}
        best_int8 = min(int8, key=int8.get)
        floats = {k: v for k, v in times.items() if not k.endswith("int8")}
        best_float = min(floats, key=floats.get)
        expected = best_float if floats[best_float] * FLOAT_MARGIN < int8[best_int8] else best_int8
        assert layer.kernel == expected == choose(layer, True)
    with pytest.raises(ValueError, match="can run"):
        Lowering(model, data(1), measure=False, progress=False, kernels={"fc": "low-rank int8"})
    with pytest.raises(ValueError, match="names no module"):
        Lowering(model, data(1), measure=False, progress=False, kernels={"nope": "dense int8"})


def test_report_rows_carry_macs_bytes_sqnr_and_time():
    model = pruned_resnet(0.8)
    lowered, report = edgeopt.quantize(model, data(), progress=False, measure=True, timing_rows=1)
    row = report["layer2.0.conv2"]
    assert row.kernel in row.kernel_us and row.time_us == row.kernel_us[row.kernel]
    assert row.macs_before == 32 * 32 * 9 * 16 * 16  # 32->32 3x3 on a 16x16 map
    module = lowered.get_submodule("layer2.0.conv2")
    assert row.weight_bytes == weight_bytes(module) and row.weight_bytes_before == 32 * 32 * 9 * 4  # no bias
    if isinstance(module, SparseConv2d):
        assert row.macs < row.macs_before and 0.1 < row.block_density < 0.4
    assert 0.7 < row.sparsity < 0.9 and row.sqnr_db > 25
    assert "sparse int8" in str(report) or "dense int8" in str(report)


def test_low_rank_layer_lowers_to_int8_factors_with_static_ranges():
    torch.manual_seed(0)
    linear = nn.Linear(96, 64)
    model = nn.Sequential(nn.Linear(32, 96), nn.ReLU(), LowRankLinear.from_float(linear, rank=12), nn.ReLU(),
                          nn.Linear(64, 5)).eval()
    batches = [torch.randn(16, 32) for _ in range(2)]
    lowering = Lowering(model, batches, measure=False, progress=False)
    layer = next(layer for layer in lowering.layers if layer.name == "2")
    assert set(layer.candidates) == {"low-rank int8", "low-rank fp32", "dense int8", "torch fp32"}
    assert layer.kernel == "low-rank int8"
    lowered = lowering.assemble()
    first, second = lowered.get_submodule("2")
    lo, hi = lowering.stats["2/inner"].lo, lowering.stats["2/inner"].hi
    assert first.mode == second.mode == "static" and second.activation == "relu"  # the ReLU after it is fused
    assert float(second.input_scale) > 0 and lo < 0 < hi
    with torch.no_grad():
        ref, out = model(batches[0]), lowered(batches[0])
    assert 10 * math.log10(ref.pow(2).mean() / (ref - out).pow(2).mean()) > 30
    assert macs_per_sample(lowered.get_submodule("2"), torch.randn(1, 96)) == 12 * (96 + 64)


def test_time_candidates_times_each_in_turn():
    calls = {"a": 0, "b": 0}

    class Counting(nn.Module):
        def __init__(self, key):
            super().__init__()
            self.key = key

        def forward(self, x):
            calls[self.key] += 1
            return x

    times = time_candidates({"a": Counting("a"), "b": Counting("b")}, torch.zeros(1), rounds=3)
    assert set(times) == {"a", "b"} and all(t > 0 for t in times.values())
    assert calls["a"] > 3 and calls["b"] > 3


class FunctionalPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32, 4)

    def forward(self, x):
        y = torch.relu(self.conv2(torch.relu(self.conv(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


@pytest.mark.parametrize("model_fn", [lambda: get_model("resnet10_cifar_slim").eval(), lambda: FunctionalPool().eval()])
def test_global_average_pool_takes_the_last_conv_in_uint8(model_fn):
    from edgeopt.nn import GlobalAvgPool2d

    torch.manual_seed(0)
    model = model_fn()
    batches = data(2)
    lowered, report = edgeopt.quantize(model, batches, progress=False, measure=False)
    pools = [n for n, m in lowered.named_modules() if isinstance(m, GlobalAvgPool2d)]
    assert len(pools) == 1 and not any(type(m) is nn.AdaptiveAvgPool2d for m in lowered.modules())
    last = "layer4.0.conv2" if "layer4.0.conv2" in dict(lowered.named_modules()) else "conv2"
    assert report[last].u8_output and report[last].u8_output_to == (pools[0],)
    float_pool, _ = edgeopt.quantize(model, batches, progress=False, measure=False, u8_between_layers=False)
    assert not any(report.u8_output for report in _)
    with torch.no_grad():
        ref, out, out_float_pool = model(batches[0]), lowered(batches[0]), float_pool(batches[0])
    assert 10 * math.log10(ref.pow(2).mean() / (ref - out).pow(2).mean()) > 25
    # the uint8 pool differs from the float one by the output rounding of the last conv only
    assert float((out - out_float_pool).abs().max()) < 0.05 * float(ref.abs().max())


class MeanHead(nn.Module):
    def __init__(self, keepdim):
        super().__init__()
        self.keepdim = keepdim
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        y = torch.relu(self.conv(x)).mean((2, 3), keepdim=self.keepdim)
        return self.fc(y.flatten(1))


@pytest.mark.parametrize("keepdim", [False, True])
def test_a_spatial_mean_becomes_the_uint8_pool(keepdim):
    from edgeopt.nn import GlobalAvgPool2d

    torch.manual_seed(0)
    model = MeanHead(keepdim).eval()
    lowered, report = edgeopt.quantize(model, data(2), progress=False, measure=False)
    assert sum(isinstance(m, GlobalAvgPool2d) for m in lowered.modules()) == 1
    assert report["conv"].u8_output
    with torch.no_grad():
        ref, out = model(data(1, 5)[0]), lowered(data(1, 5)[0])
    assert out.shape == ref.shape and 10 * math.log10(ref.pow(2).mean() / (ref - out).pow(2).mean()) > 25


class SigmoidMeanHead(nn.Module):
    """A mean over something no int8 layer hands over in uint8 (a sigmoid), beside one that is."""

    def __init__(self, keepdim, module):
        super().__init__()
        self.keepdim = keepdim
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1) if module else None
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        y = torch.sigmoid(self.conv(x))
        y = self.pool(y) if self.pool is not None else y.mean((2, 3), keepdim=self.keepdim)
        return self.fc(y.flatten(1))


@pytest.mark.parametrize("keepdim, module", [(False, False), (True, False), (False, True)])
def test_a_global_pool_without_uint8_input_is_given_back_as_it_was(keepdim, module):
    """edgeopt's pool only pays on uint8 input; on float input the lowering leaves torch's mean (or
    nn.AdaptiveAvgPool2d) in place, so a native plan is not split by a module there."""
    from edgeopt.nn import GlobalAvgPool2d

    torch.manual_seed(0)
    model = SigmoidMeanHead(keepdim, module).eval()
    lowered, report = edgeopt.quantize(model, data(2), progress=False, measure=False)
    assert not any(isinstance(m, GlobalAvgPool2d) for m in lowered.modules())
    assert not report["conv"].u8_output
    if module:
        assert type(lowered.get_submodule("pool")) is nn.AdaptiveAvgPool2d
    else:
        means = [n for n in lowered.graph.nodes if n.op == "call_method" and n.target == "mean"]
        assert len(means) == 1 and means[0].kwargs["keepdim"] == keepdim
    with torch.no_grad():
        ref, out = model(data(1, 5)[0]), lowered(data(1, 5)[0])
    assert out.shape == ref.shape and 10 * math.log10(ref.pow(2).mean() / (ref - out).pow(2).mean()) > 25


def test_small_layers_stay_int8_under_the_runtime_threshold():
    """keep_int8_under_us: a float kernel measured faster replaces an int8 one only where the int8 one takes
    at least that long (a module call's Python cost decides small layers otherwise)."""
    from types import SimpleNamespace

    from edgeopt.passes.report import LayerReport

    def layer(int8_us, float_us):
        rep = LayerReport("l", "Conv2d")
        rep.kernel_us.update({"dense int8": int8_us, "torch fp32": float_us})
        return SimpleNamespace(candidates={"dense int8": None, "torch fp32": None}, report=rep)

    assert choose(layer(22.0, 12.0), True) == "torch fp32"
    assert choose(layer(22.0, 12.0), True, keep_int8_under_us=50.0) == "dense int8"
    assert choose(layer(220.0, 120.0), True, keep_int8_under_us=50.0) == "torch fp32"
    assert choose(layer(22.0, 21.0), True) == "dense int8"  # within the float margin
