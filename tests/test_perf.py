"""edgeopt.perf: costs, the per-node clock, accounting, matching, schedules. No timing is asserted: the
clock is replaced by a counter where durations matter."""
import itertools
import math

import pytest
import torch
from torch import nn

import edgeopt
from edgeopt.nn import QuantConv2d, QuantLinear
from edgeopt.perf import cost, layer_timer, timing
from edgeopt.perf.ceilings import Ceilings
from edgeopt.perf.peers import module_name
from edgeopt.profile import LayerTime, ModelProfile, classify, match_rows, per_layer_seconds
from edgeopt.perf.layer_timer import LayerTimer, Step


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)) + x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.block = Block()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))


class Untraceable(nn.Module):
    """Data-dependent control flow in the top-level forward: fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 3)

    def forward(self, x):
        y = self.a(x)
        if float(y.sum()) > 1e9:
            y = y * 2
        return self.b(torch.relu(y))


class Checked(nn.Module):
    """A submodule whose forward checks a shape in Python: kept whole, the rest still traced op by op."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 8, 2, stride=2)

    def forward(self, x):
        if x.shape[-1] != 8:
            raise ValueError("expected width 8")
        return self.proj(x).flatten(1)


class WithChecked(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = Checked()
        self.head = nn.Linear(8 * 16, 2)

    def forward(self, x):
        return self.head(self.embed(x) * 2)


@pytest.fixture
def counting_clock(monkeypatch):
    """perf_counter replaced by 0, 1, 2, ...: every step then lasts exactly 1."""
    ticks = itertools.count()
    monkeypatch.setattr(layer_timer, "_clock", lambda: float(next(ticks)))


def test_cost_of_conv_linear_and_their_int8_twins():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    x = torch.randn(1, 8, 10, 10)
    y = conv(x)
    c = cost.module_cost(conv, (x,), y)
    assert c.macs == 16 * 5 * 5 * 8 * 9 and not c.int8
    assert c.input_bytes == x.numel() * 4 and c.output_bytes == y.numel() * 4
    assert c.weight_bytes == (conv.weight.numel() + conv.bias.numel()) * 4
    q = QuantConv2d.from_float(conv, input_range=(-3.0, 3.0))
    cq = cost.module_cost(q, (x,), q(x))
    assert cq.macs == c.macs and cq.int8 and cq.weight_bytes >= q.packed_weight.numel()
    lin = nn.Linear(12, 7)
    xl = torch.randn(3, 12)
    assert cost.module_cost(lin, (xl,), lin(xl)).macs == 3 * 7 * 12
    ql = QuantLinear.from_float(lin)
    assert cost.module_cost(ql, (xl,), ql(xl)).macs == 3 * 7 * 12


def test_views_move_nothing_and_inplace_ops_move_their_tensor():
    x = torch.randn(2, 3, 4, 4)
    assert cost.function_cost(torch.flatten, (x, 1), {}, torch.flatten(x, 1)).bytes == 0
    relu = nn.ReLU(inplace=True)
    y = x.clone()
    c = cost.module_cost(relu, (y,), relu(y))
    assert c.input_bytes == c.output_bytes == x.numel() * 4
    a, b = torch.randn(5, 6), torch.randn(6, 7)
    assert cost.function_cost(torch.matmul, (a, b), {}, a @ b).macs == 5 * 7 * 6
    q, k, v = (torch.randn(1, 2, 9, 4) for _ in range(3))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert cost.function_macs(torch.nn.functional.scaled_dot_product_attention, (q, k, v), {}, out) == 2 * 2 * 9 * 9 * 4


def test_intensity_and_sum():
    c = cost.Cost(macs=100, weight_bytes=10, input_bytes=20, output_bytes=20) + cost.Cost(macs=50, int8=True)
    assert c.macs == 150 and c.bytes == 50 and c.int8 and c.intensity == 3.0


def test_layer_timer_steps_tile_the_call(counting_clock):
    model = Net().eval()
    x = torch.randn(1, 3, 8, 8)
    timer = LayerTimer(model, x)
    assert timer.mode == "fx"
    names = [s.name for s in timer.steps]
    assert names[:3] == ["stem", "block.conv", "block.bn"] and "fc" in names
    ops = [s for s in timer.steps if s.kind == "op"]
    assert {s.op for s in ops} >= {"add", "flatten"}
    assert next(s for s in ops if s.op == "add").scope == "block"
    durations = timer.run(x)
    assert durations == [1.0] * len(timer.steps)  # one stamp per step, back to back: the steps tile the call
    with torch.no_grad():
        assert torch.equal(timer.instrumented()(x), model(x))


def test_layer_timer_costs_match_model_macs():
    model = Net().eval()
    x = torch.randn(1, 3, 8, 8)
    timer = LayerTimer(model, x)
    assert sum(s.cost.macs for s in timer.steps) == cost.count_macs(model, (3, 8, 8))


def test_untraceable_submodule_is_one_step_and_costs_its_macs(counting_clock):
    model = WithChecked().eval()
    x = torch.randn(1, 3, 8, 8)
    timer = LayerTimer(model, x)
    assert timer.mode == "fx" and timer.opaque == ["embed"]
    embed = next(s for s in timer.steps if s.name == "embed")
    assert embed.cost.macs == 8 * 4 * 4 * 3 * 4
    assert timer.run(x) == [1.0] * len(timer.steps)


def test_untraceable_model_falls_back_to_hooks(counting_clock):
    model = Untraceable().eval()
    x = torch.randn(2, 6)
    timer = LayerTimer(model, x)
    assert timer.mode == "hooks" and timer.trace_error
    kinds = [s.kind for s in timer.steps]
    assert kinds == ["between", "layer", "between", "layer", "between"]
    assert [s.name for s in timer.steps if s.kind == "layer"] == ["a", "b"]
    assert timer.run(x) == [1.0] * 5


def test_per_layer_seconds_add_up_to_a_typical_call():
    calls = [[1.0, 2.0, 3.0], [1.5, 2.5, 3.0], [9.0, 9.0, 9.0], [1.0, 2.0, 3.5], [0.1, 0.1, 0.1]]
    seconds = per_layer_seconds(calls)
    totals = sorted(sum(c) for c in calls)
    lo, hi = timing.quantile(totals, 0.25), timing.quantile(totals, 0.75)
    kept = [sum(c) for c in calls if lo <= sum(c) <= hi]
    assert math.isclose(sum(seconds), sum(kept) / len(kept))
    assert per_layer_seconds([]) == []


def _profile(label, names, seconds, end_to_end):
    layers = [LayerTime(Step(n, "op" if n.startswith("op:") else "layer", "X"), s) for n, s in zip(names, seconds)]
    return ModelProfile(label, layers, timing.Samples(end_to_end), timing.Samples(end_to_end))


def test_accounting_error_is_layers_over_end_to_end():
    p = _profile("a", ["x", "y"], [0.004, 0.006], [0.0100, 0.0098, 0.0102])
    assert math.isclose(p.layers_seconds, 0.010)
    assert math.isclose(p.accounting_error, 0.0)
    p = _profile("a", ["x", "y"], [0.0055, 0.0050], [0.010])
    assert math.isclose(p.accounting_error, 0.05)


def test_rows_match_layers_by_name_and_absorb_the_rest():
    before = _profile("fp32", ["conv1", "bn1", "relu", "op:add", "fc"], [5, 1, 1, 1, 2], [10])
    after = _profile("int8", ["conv1", "op:flatten", "fc", "extra"], [2, 0.1, 1, 0.5], [4])
    rows = match_rows(before, after)
    assert [r.name for r in rows] == ["conv1", "fc"]
    assert [layer.name for layer in rows[0].before] == ["conv1", "bn1", "relu", "op:add"]
    assert [layer.name for layer in rows[0].after] == ["conv1", "op:flatten"]
    assert [layer.name for layer in rows[1].after] == ["fc", "extra"]
    assert rows[0].seconds("before") == 8 and rows[1].seconds("after") == 1.5
    assert sum(r.seconds("before") for r in rows) == before.layers_seconds
    assert sum(r.seconds("after") for r in rows) == after.layers_seconds


def test_classify_by_roofline():
    c = Ceilings(int8_gmacs=100.0, fp32_gmacs=50.0, read_gbs=10.0, threads=1)
    conv = cost.Cost(macs=100_000_000, weight_bytes=10_000, input_bytes=100_000, output_bytes=100_000, int8=True)
    bound, compute, _ = classify(conv, 2e-3, c)  # 50 GMAC/s of 100
    assert bound == "compute" and math.isclose(compute, 0.5)
    pool = cost.Cost(input_bytes=4_000_000, output_bytes=1_000_000)
    bound, _, bw = classify(pool, 1e-3, c)  # 5 GB/s of 10
    assert bound == "memory" and math.isclose(bw, 0.5)
    view = cost.Cost()
    assert classify(view, 5e-6, c)[0] == "overhead"
    tiny = cost.Cost(macs=1000, input_bytes=4000, output_bytes=40)
    assert classify(tiny, 20e-6, c)[0] == "overhead"


@pytest.mark.parametrize("name,expected", [
    ("/layer1/layer1.0/conv1/Conv", "layer1.0.conv1"),
    ("/layer1/layer1.0/conv1/Conv/WithoutBiases", "layer1.0.conv1"),
    ("/layer2/layer2.0/downsample/downsample.0/Conv_token_19", "layer2.0.downsample.0"),
    ("/layer1/layer1.0/Add", "layer1.0"),
    ("/fc/Gemm/WithoutBiases/DequantizationMultiply", "fc"),
    ("input_QuantizeLinear_abcd_acdb_/conv1/Conv/WithoutBiases", ""),
    ("output", ""),
])
def test_onnx_node_names_map_to_modules(name, expected):
    known = {"conv1", "layer1", "layer1.0", "layer1.0.conv1", "layer2", "layer2.0", "layer2.0.downsample",
             "layer2.0.downsample.0", "fc"}
    assert module_name(name, known) == expected


def test_alternating_blocks_rotate_and_skip_the_first_call():
    log = []
    contenders = {name: (lambda name=name: log.append(name) or len(log)) for name in "abc"}
    kept = []
    samples = timing.alternating_blocks(contenders, blocks=3, calls_per_block={"a": 2, "b": 1, "c": 1},
                                        after={"b": kept.append}, settle_seconds=0)
    assert [samples[n].n for n in "abc"] == [6, 3, 3]
    # block order a b c, then b c a, then c a b; each block starts with an untimed call
    assert "".join(log) == "aaabbcc" + "bbccaaa" + "ccaaabb"
    assert len(kept) == 3


def test_samples_statistics():
    s = timing.Samples([0.001 * i for i in range(1, 101)])
    assert math.isclose(s.median, 0.0505) and math.isclose(s.p95, timing.quantile(s.values, 0.95))
    assert math.isnan(timing.Samples().median)
    assert timing.ratio(2.0, 1.0) == 2.0 and math.isnan(timing.ratio(1.0, 0.0))
