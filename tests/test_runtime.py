"""edgeopt.runtime: native execution plans are bit-identical to the module-by-module path (models with random
and trained weights, batch sizes, input layouts, thread counts, ISA paths), keep the nn.Module contract
(state_dict, torch.save, deepcopy, torch.compile), give clear errors; the arena planner and the pool."""
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import edgeopt
import edgeopt.runtime as rt
from edgeopt._native import _C
from edgeopt.models import get_model, load_pretrained
from edgeopt.nn import GlobalAvgPool2d, MaxPool2d, QuantConv2d, QuantLinear
from edgeopt.quantize import quantize
from test_quantize import batches, randomize_bn


_QUANTIZED = {}


def quantized(name: str):
    """(quantized GraphModule, input shape) for a named case; built once per test session."""
    if name not in _QUANTIZED:
        torch.manual_seed(0)
        if name == "vgg_audio_trained":
            model, shape, rounding = load_pretrained("ravdess_vgg_audio"), (1, 1, 64, 128), "nearest"
        elif name == "resnet10_cifar_trained":
            model, shape, rounding = load_pretrained("cifar10_resnet10_cifar_slim"), (1, 3, 32, 32), "gptq"
        else:
            shape = {"resnet18": (1, 3, 64, 64), "mobilenet_v2": (1, 3, 64, 64), "vgg_audio": (1, 1, 32, 64),
                     "resnet18_cifar": (1, 3, 32, 32)}[name]
            model, rounding = randomize_bn(get_model(name)), "nearest"
        qmodel, _ = quantize(model.eval(), batches((2, *shape[1:]), n=2), progress=False, weight_rounding=rounding,
                             measure=False)
        _QUANTIZED[name] = (qmodel.eval(), shape)
    return _QUANTIZED[name]


MODELS = ["resnet18", "mobilenet_v2", "vgg_audio", "resnet18_cifar", "vgg_audio_trained", "resnet10_cifar_trained"]


@pytest.fixture
def threads():
    yield
    edgeopt.set_num_threads(None)


def assert_identical(a: torch.Tensor, b: torch.Tensor):
    assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
    assert torch.equal(a, b), f"max abs diff {float((a.float() - b.float()).abs().max())}"


@pytest.mark.parametrize("name", MODELS)
def test_plan_is_bit_identical_to_the_modules(name, threads):
    qmodel, shape = quantized(name)
    x = torch.randn(shape)
    compiled = rt.compile(qmodel, x)
    # every quantized layer and pool is run by a plan, not by the graph
    called = {n.target for n in compiled.graph.nodes if n.op == "call_module"}
    for mod_name, m in qmodel.named_modules():
        if isinstance(m, (QuantConv2d, QuantLinear, MaxPool2d)):
            assert mod_name not in called, mod_name
    assert set(compiled.state_dict()) == set(qmodel.state_dict())
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for n_threads, batch, channels_last in ((1, 1, False), (2, 1, False), (2, 3, True)):
            edgeopt.set_num_threads(n_threads)
            xb = torch.randn(batch, *shape[1:], generator=g) * 1.5
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            assert_identical(compiled(xb), qmodel(xb))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_one_plan_for_the_whole_model_with_the_u8_global_pool(name, threads):
    qmodel, shape = quantized(name)  # the lowering hands the last conv's uint8 output to edgeopt's global pool
    assert any(isinstance(m, GlobalAvgPool2d) for m in qmodel.modules())
    x = torch.randn(shape)
    compiled = rt.compile(qmodel, x)
    assert len(rt.partitions(compiled)) == 1
    assert [n.op for n in compiled.graph.nodes] == ["placeholder", "call_module", "output"]
    with torch.no_grad():
        for n_threads in (1, 2):
            edgeopt.set_num_threads(n_threads)
            xb = torch.randn(2, *shape[1:])
            assert_identical(compiled(xb), qmodel(xb))


def test_saturating_and_other_spatial_inputs(threads):
    qmodel, shape = quantized("resnet18")
    compiled = rt.compile(qmodel, torch.randn(shape))
    with torch.no_grad():
        for x in (torch.full(shape, 1e4), torch.full(shape, -1e4), torch.zeros(shape), torch.randn(2, 3, 45, 71),
                  torch.randn(1, 3, 224, 224)):
            assert_identical(compiled(x), qmodel(x))


class TwoHeads(nn.Module):
    """A partition with two outputs (one also used inside), a dynamic conv, a torch op between plans,
    a float residual add fused into a conv, and nn.Flatten."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        self.head = nn.Conv2d(16, 16, 1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(16 * 5 * 5, 5)

    def forward(self, x):
        y = F.relu(self.stem(x))
        z = F.relu(self.body(y) + y)
        side = torch.sigmoid(z).mean((2, 3))          # torch, between two plans
        p = self.pool(z)
        return self.fc(self.flat(self.head(p))), side


def test_multiple_outputs_torch_between_and_dynamic_layers(threads):
    torch.manual_seed(3)
    qmodel, _ = quantize(TwoHeads().eval(), batches((2, 3, 8, 8)), progress=False, weight_rounding="nearest",
                         measure=False)
    head = qmodel.get_submodule("head")
    assert isinstance(head, QuantConv2d)
    head.mode = "dynamic"
    x = torch.randn(2, 3, 8, 8)
    compiled = rt.compile(qmodel, x)
    assert len(rt.partitions(compiled)) == 1  # the torch op runs after the plan that feeds it
    with torch.no_grad():
        for a, b in zip(compiled(x), qmodel(x)):
            assert_identical(a, b)


def test_every_isa_path(isa):
    torch.manual_seed(2)
    qmodel, _ = quantize(TwoHeads().eval(), batches((2, 3, 8, 8)), progress=False, weight_rounding="nearest",
                         measure=False)
    x = torch.randn(2, 3, 8, 8)
    compiled = rt.compile(qmodel, x)
    with torch.no_grad():
        for a, b in zip(compiled(x), qmodel(x)):
            assert_identical(a, b)


def test_state_dict_save_load_deepcopy_rebuild(tmp_path):
    qmodel, shape = quantized("resnet18_cifar")
    x = torch.randn(2, *shape[1:])
    compiled = rt.compile(qmodel, x)
    with torch.no_grad():
        ref = qmodel(x)
        # another quantization of the same architecture: its state loads into the compiled model, whose
        # plans are rebuilt from the loaded weights
        torch.manual_seed(5)
        other, _ = quantize(randomize_bn(get_model("resnet18_cifar"), seed=3), batches((2, *shape[1:]), seed=4),
                            progress=False, weight_rounding="nearest", measure=False)
        other_ref = other(x)
        assert not torch.equal(other_ref, ref)
        copied = copy.deepcopy(compiled)
        buf = io.BytesIO()
        torch.save(other.state_dict(), buf)
        buf.seek(0)
        copied.load_state_dict(torch.load(buf))
        assert_identical(copied(x), other_ref)
        assert_identical(compiled(x), ref)  # the original is untouched by the copy's load
        assert set(copied.state_dict()) == set(qmodel.state_dict())
        torch.save(compiled, tmp_path / "compiled.pt")
        loaded = torch.load(tmp_path / "compiled.pt", weights_only=False)
        assert_identical(loaded(x), ref)
        assert set(loaded.state_dict()) == set(qmodel.state_dict())
        assert_identical(copy.deepcopy(loaded)(x), ref)  # a restored model copies and pickles on
        buf = io.BytesIO()
        torch.save(loaded, buf)
        buf.seek(0)
        assert_identical(torch.load(buf, weights_only=False)(x), ref)
        # a source module changed in place: the plan keeps its snapshot until rebuilt
        conv = compiled.get_submodule("conv1")
        saved = conv._input_params
        conv.set_input_range(-0.5, 0.5)
        stale = compiled(x)
        rt.rebuild(compiled)
        assert_identical(compiled(x), qmodel(x))
        assert not torch.equal(stale, compiled(x))
        conv.set_input_range(*[v for v in (-(saved[1]) * saved[0], (255 - saved[1]) * saved[0])])
        rt.rebuild(compiled)


def test_torch_compile_fullgraph_keeps_one_op_per_plan():
    qmodel, shape = quantized("resnet18_cifar")
    x = torch.randn(shape)
    compiled = rt.compile(qmodel, x)
    graphs = []

    def backend(gm, _inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    traced = torch.compile(compiled, fullgraph=True, backend=backend)
    with torch.no_grad():
        assert_identical(traced(x), qmodel(x))
    calls = [n for n in graphs[0].graph.nodes if n.op == "call_function" and "run_plan" in str(n.target)]
    assert len(calls) == len(rt.partitions(compiled)) >= 1
    part = rt.partitions(compiled)[0]
    torch.library.opcheck(torch.ops.edgeopt.run_plan.default, ([x], part._plan_id))


def test_bad_inputs_raise_clear_errors():
    qmodel, shape = quantized("resnet18_cifar")
    compiled = rt.compile(qmodel, torch.randn(shape))
    with torch.no_grad():
        with pytest.raises(TypeError, match="must be torch.float32, got torch.float64"):
            compiled(torch.randn(shape, dtype=torch.float64))
        with pytest.raises(ValueError, match="must be 4-D"):
            compiled(torch.randn(3, 32, 32))
        with pytest.raises(ValueError, match="weights expect 3 input channels"):
            compiled(torch.randn(1, 4, 32, 32))
        with pytest.raises(ValueError, match="is empty"):
            compiled(torch.randn(1, 3, 0, 5))
        with pytest.raises(ValueError, match="on the CPU"):
            compiled(torch.randn(shape, device="meta"))
        x = torch.randn(shape)
        x[0, 1, 2, 3] = float("nan")
        with pytest.raises(ValueError, match="NaN or Inf"):
            compiled(x)
        assert compiled(torch.randn(shape)).shape == (1, 10)  # still usable after the errors
    with pytest.raises(TypeError, match="GraphModule"):
        rt.compile(nn.Sequential(nn.Linear(3, 3)), torch.randn(1, 3))


def test_plan_api_checks_its_arguments():
    conv = QuantConv2d.from_float(nn.Conv2d(4, 8, 3, padding=1), input_range=(-1, 1))
    plan = _C.Plan()
    x = plan.add_input("float32", 4, "x")
    with pytest.raises(ValueError, match="'float32' or 'uint8'"):
        plan.add_input("int8", 4)
    with pytest.raises(ValueError, match="do not split into 3 groups"):
        plan.add_qconv2d(x, conv.packed_weight.numpy(), (3, 3), (1, 1), (1, 1), (1, 1), 3, False, 0.1, 0, 0.0,
                         float("inf"), False, 1.0, 0)
    with pytest.raises(ValueError, match="does not exist"):
        plan.add_flatten(42)
    other = _C.Plan()
    u8 = other.add_qconv2d(other.add_input("float32", 4), conv.packed_weight.numpy(), (3, 3), (1, 1), (1, 1),
                           (1, 1), 1, False, 0.1, 0, 0.0, float("inf"), True, 0.1, 0)
    assert other.dtype(u8) == "uint8"
    with pytest.raises(TypeError, match="residual must be a float32"):
        other.add_qconv2d(u8, conv.packed_weight.numpy(), (3, 3), (1, 1), (1, 1), (1, 1), 1, False, 0.1, 0, 0.0,
                          float("inf"), False, 1.0, 0, residual=u8)
    with pytest.raises(ValueError, match="dynamic must be False"):
        other.add_qconv2d(u8, conv.packed_weight.numpy(), (3, 3), (1, 1), (1, 1), (1, 1), 1, True, 0.1, 0, 0.0,
                          float("inf"), False, 1.0, 0)
    y = plan.add_qconv2d(x, conv.packed_weight.numpy(), (3, 3), (1, 1), (1, 1), (1, 1), 1, False, 0.1, 0, 0.0,
                         float("inf"), False, 1.0, 0, name="conv")
    with pytest.raises(ValueError, match="input cannot also be an output"):
        plan.mark_output(x)
    plan.mark_output(y)
    assert plan.setup([(2, 5, 6, 4)]) == [(2, 5, 6, 8)]
    out = torch.empty(2, 5, 6, 8)
    with pytest.raises(TypeError, match="must be float32, got uint8"):
        plan.run([torch.randn(2, 4, 5, 6).numpy()], [torch.empty(2, 5, 6, 8, dtype=torch.uint8).numpy()], 1)
    with pytest.raises(ValueError, match="must hold"):
        plan.run([torch.randn(2, 4, 5, 6).numpy()], [torch.empty(2, 5, 6, 7).numpy()], 1)
    with pytest.raises(ValueError, match="num_threads"):
        plan.run([torch.randn(2, 4, 5, 6).numpy()], [out.numpy()], 0)
    x_in = torch.randn(2, 4, 5, 6)
    plan.run([x_in.numpy()], [out.numpy()], 2)
    ref = _C.qconv2d(x_in.permute(0, 2, 3, 1).contiguous().numpy(), conv.packed_weight.numpy(),
                     (expected := torch.empty(2, 5, 6, 8)).numpy(), (3, 3), (1, 1), (1, 1), (1, 1), 1, False, 0.1, 0,
                     0.0, float("inf"), 1.0, 0, 1)
    assert ref == (pytest.approx(0.1), 0) and torch.equal(out, expected)
    times = plan.node_times()
    assert [t["name"] for t in times] == ["x", "conv"] and times[1]["runs"] == 1 and times[1]["macs"] == 2 * 5 * 6 * 8 * 36


def test_profile_reads_every_node():
    qmodel, shape = quantized("mobilenet_v2")
    x = torch.randn(shape)
    compiled = rt.compile(qmodel, x)
    p = rt.profile(compiled, x, runs=3, warmup=1)
    names = [t.name for t in p.nodes]
    assert "features.0.0" in names and "classifier.1" in names
    assert all(t.runs == 3 for t in p.nodes if t.op != "to_nhwc")
    assert all(t.macs > 0 for t in p.nodes if t.op.startswith("q"))
    assert 0 < p.nodes_ms <= p.native_ms <= p.forward_ms
    assert p.torch_ms == 0 and not p.torch_nodes  # one plan: the global pool is edgeopt's uint8 one
    assert p.glue_ms == pytest.approx(p.forward_ms - p.nodes_ms - p.torch_ms)
    assert "outside any kernel" in rt.format_profile(p)
    torch.manual_seed(3)
    two, _ = quantize(TwoHeads().eval(), batches((2, 3, 8, 8)), progress=False, weight_rounding="nearest",
                      measure=False)
    x2 = torch.randn(2, 3, 8, 8)
    p2 = rt.profile(rt.compile(two, x2), x2, runs=3, warmup=1)
    assert p2.torch_ms > 0 and {"sigmoid", "mean"} <= set(p2.torch_nodes)  # the torch ops between the plans
    assert p2.glue_ms == pytest.approx(p2.forward_ms - p2.nodes_ms - p2.torch_ms)


def test_layer_times_after_a_call_are_keyed_by_module_path():
    qmodel, shape = quantized("resnet18")
    x = torch.randn(shape)
    compiled = rt.compile(qmodel, x)
    # the lowering hands the last conv's uint8 to edgeopt's global pool, so the plan runs the pool too
    layers = {name for name, m in qmodel.named_modules()
              if isinstance(m, (QuantConv2d, QuantLinear, MaxPool2d, GlobalAvgPool2d))}
    assert "avgpool" in layers and set(rt.native_layers(compiled)) == layers
    rt.reset_times(compiled)
    with torch.no_grad():
        compiled(x)
    first = rt.layer_times(compiled)
    names = [name for name, _ in first]
    assert layers <= set(names) and "layer1.0.conv1" in names
    assert names.index("conv1") < names.index("layer1.0.conv1") < names.index("fc")  # the order they ran in
    assert all(seconds > 0 for _, seconds in first)
    assert any(name.endswith(".to_nhwc(x)") for name in names)  # the input copy, outside any layer
    # the latest call's times, and the mean over the calls since the reset
    with torch.no_grad():
        compiled(x)
    totals = {t.name: t.ms for t in rt.node_times(compiled) if t.op != "to_nhwc"}
    mean = dict(rt.layer_times(compiled, mean=True))
    assert mean["conv1"] == pytest.approx(totals["conv1"] / 2 / 1e3)
    latest = dict(rt.layer_times(compiled))
    assert latest["conv1"] == pytest.approx(totals["conv1"] / 1e3 - dict(first)["conv1"])
    rt.reset_times(compiled)
    assert all(seconds == 0 for _, seconds in rt.layer_times(compiled, mean=True))


def test_node_seconds_times_a_layer_as_a_plan_node():
    torch.manual_seed(0)
    conv = QuantConv2d.from_float(nn.Conv2d(16, 16, 1), input_range=(-3.0, 3.0))
    x = torch.randn(1, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    seconds = rt.node_seconds(conv, x, calls=5)
    assert seconds is not None and 0 < seconds < 0.1
    assert rt.node_seconds(nn.ReLU(), x) is None  # not something a plan runs


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=30))
def test_arena_planner_never_overlaps_live_buffers(raw):
    requests = [(b, min(f, l), max(f, l)) for b, f, l in raw]
    offsets, total = _C._plan_arena(requests)
    align = _C.ARENA_ALIGNMENT
    for i, (bi, fi, li) in enumerate(requests):
        assert offsets[i] % align == 0 and offsets[i] + bi <= total
        for j in range(i):
            bj, fj, lj = requests[j]
            if fi <= lj and fj <= li and bi and bj:  # both live at some node: disjoint bytes
                assert offsets[i] + bi <= offsets[j] or offsets[j] + bj <= offsets[i]
    # buffers that are never live together share bytes
    offsets, total = _C._plan_arena([(1000, 0, 1), (1000, 2, 3), (1000, 4, 5)])
    assert total == 1024 and offsets == [0, 0, 0]


def test_pool_regions_and_counters():
    assert _C._parallel_selftest(2000, 2) == 0
    before = _C.pool_stats()
    with _C.ParallelRegion(2):
        assert _C._parallel_selftest(50, 2) == 0
    after = _C.pool_stats()
    assert after["regions"] > before["regions"]
    assert all(after[k] >= before[k] for k in before)
    assert _C.region_spin_us() >= _C.worker_spin_us() >= 0 and isinstance(_C.pool_contended(), bool)


def test_worker_time_slice_setting():
    assert _C._parallel_selftest(50, 2) == 0  # at least one worker exists
    default = _C.worker_slice_us()
    try:
        accepted = _C.set_worker_slice_us(200)
        assert _C.worker_slice_us() == 200 and 0 <= accepted <= _C.pool_worker_count()
        assert _C._parallel_selftest(200, 2) == 0  # the pool still runs every task exactly once
        _C.set_worker_slice_us(-5)
        assert _C.worker_slice_us() == 0  # negative: the kernel's default
    finally:
        _C.set_worker_slice_us(default)
