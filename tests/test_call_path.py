"""One call path per module: eager (edgeopt.kernels), torch.compile (edgeopt.ops, whose fakes run the same
checks) and the meta device give the same shapes and the same error messages; batch 0 and unbatched conv
input work; the ops reject bad window arguments clearly."""
import math

import pytest
import torch
from torch import nn

from edgeopt import kernels
from edgeopt.nn import (GlobalAvgPool2d, HalfLinear, LowRankLinear, MaxPool2d, QuantConv2d, QuantLinear, SparseConv2d,
                        SparseLinear)

CL = torch.channels_last


def linear_modules():
    torch.manual_seed(0)
    lin = nn.Linear(12, 7)
    return {
        "QuantLinear dynamic": QuantLinear.from_float(lin),
        "QuantLinear static": QuantLinear.from_float(lin, "static", input_range=(-3, 3)),
        "HalfLinear": HalfLinear.from_float(lin),
        "HalfLinear fp32": HalfLinear.from_float(lin, weight_dtype="fp32"),
        "SparseLinear fp32": SparseLinear.from_float(lin),
        "SparseLinear int8": SparseLinear.from_float(lin, dtype="int8"),
        "SparseLinear int8 static": SparseLinear.from_float(lin, dtype="int8", mode="static", input_range=(-3, 3)),
        "LowRankLinear fp32": LowRankLinear.from_float(lin, rank=3),
        "LowRankLinear int8": LowRankLinear.from_float(lin, rank=3, weight_dtype="int8"),
    }


def conv_modules():
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 8, 3, padding=1, stride=(1, 2))
    return {
        "QuantConv2d static": QuantConv2d.from_float(conv, "static", input_range=(-3, 3)),
        "QuantConv2d dynamic": QuantConv2d.from_float(conv, "dynamic"),
        "QuantConv2d grouped": QuantConv2d.from_float(nn.Conv2d(6, 8, 3, groups=2), "dynamic"),
        "QuantConv2d depthwise": QuantConv2d.from_float(nn.Conv2d(6, 6, 3, groups=6, padding=1), "dynamic"),
        "QuantConv2d channels_last_output": QuantConv2d.from_float(conv, "dynamic", channels_last_output=True),
        "SparseConv2d fp32": SparseConv2d.from_float(conv),
        "SparseConv2d int8": SparseConv2d.from_float(conv, dtype="int8"),
    }


LINEAR = linear_modules()
CONV = conv_modules()
# One module per torch.library op for the compiled checks (each compile costs ~0.3 s).
COMPILED_LINEAR = ["QuantLinear static", "HalfLinear", "SparseLinear fp32", "SparseLinear int8", "LowRankLinear fp32",
                   "LowRankLinear int8"]
COMPILED_CONV = ["QuantConv2d static", "QuantConv2d depthwise", "SparseConv2d fp32"]


def message(fn) -> tuple[type, str]:
    with pytest.raises(Exception) as info:
        fn()
    return info.type, str(info.value)


def compiled_message(module, x) -> str:
    torch._dynamo.reset()
    try:
        with pytest.raises(Exception) as info:
            torch.compile(module, fullgraph=True, backend="aot_eager")(x)
    finally:
        torch._dynamo.reset()
    return str(info.value)


@pytest.mark.parametrize("name", COMPILED_LINEAR)
@pytest.mark.parametrize("bad", ["features", "dtype", "scalar"])
def test_linear_errors_are_the_same_eager_and_compiled(name, bad):
    module = LINEAR[name].eval()
    x = {"features": torch.randn(2, 11), "dtype": torch.randn(2, 12, dtype=torch.float64),
         "scalar": torch.tensor(1.0)}[bad]
    kind, eager = message(lambda: module(x))
    assert kind in (ValueError, TypeError) and eager.startswith("edgeopt ")
    assert eager in compiled_message(module, x)


@pytest.mark.parametrize("name", COMPILED_CONV)
@pytest.mark.parametrize("bad", ["channels", "dtype", "too small", "2-D"])
def test_conv_errors_are_the_same_eager_and_compiled(name, bad):
    module = CONV[name].eval()
    c = module.in_channels
    x = {"channels": torch.randn(1, c + 1, 6, 6), "dtype": torch.randn(1, c, 6, 6, dtype=torch.float64),
         "too small": torch.randn(1, c, 2, 2) if "grouped" in name else torch.randn(1, c, 0, 5),
         "2-D": torch.randn(c, 6)}[bad]
    kind, eager = message(lambda: module(x))
    assert kind in (ValueError, TypeError) and eager.startswith("edgeopt ")
    assert eager in compiled_message(module, x)


def test_pool_errors_are_the_same_eager_and_compiled():
    pool = MaxPool2d(5, 1)
    x = torch.randn(1, 4, 3, 3).contiguous(memory_format=CL)
    kind, eager = message(lambda: pool(x))
    assert kind is ValueError and "smaller than the pooling window" in eager
    assert eager in compiled_message(pool, x)


@pytest.mark.parametrize("name", LINEAR)
def test_linear_batch0_meta_and_leading_dims(name):
    module = LINEAR[name].eval()
    x = torch.randn(3, 2, 12)
    with torch.no_grad():
        y = module(x)
        assert y.shape == (3, 2, 7)
        assert torch.equal(y, module(x.reshape(6, 12)).reshape(3, 2, 7))  # leading dims are rows
        for empty in (torch.randn(0, 12), torch.randn(4, 0, 12)):
            out = module(empty)
            assert out.shape == (*empty.shape[:-1], 7) and out.dtype == torch.float32
        meta = module(x.to("meta"))
        assert meta.device.type == "meta" and meta.shape == y.shape and meta.dtype == y.dtype
        if name not in COMPILED_LINEAR:
            return
        torch._dynamo.reset()
        compiled = torch.compile(module, fullgraph=True, dynamic=False, backend="aot_eager")
        assert compiled(torch.randn(0, 12)).shape == (0, 7)
        assert torch.equal(compiled(x), y)
        torch._dynamo.reset()


@pytest.mark.parametrize("name", CONV)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv_unbatched_batch0_meta(name, layout):
    module = CONV[name].eval()
    x = torch.randn(2, module.in_channels, 7, 9)
    if layout == "channels_last":
        x = x.contiguous(memory_format=CL)
    with torch.no_grad():
        y = module(x)
        ref = nn.functional.conv2d(x, torch.zeros(module.out_channels, module.in_channels // module.groups
                                                  if hasattr(module, "groups") else module.in_channels,
                                                  *module.kernel_size),
                                   stride=module.stride, padding=module.padding, dilation=module.dilation,
                                   groups=getattr(module, "groups", 1))
        assert y.shape == ref.shape
        want_cl = layout == "channels_last" or getattr(module, "channels_last_output", False)
        assert y.is_contiguous(memory_format=CL if want_cl else torch.contiguous_format)
        # unbatched (C, H, W), as torch's conv takes it: the batched result's first image
        single = module(x[0])
        assert single.shape == y.shape[1:] and torch.equal(single, module(x[:1])[0])
        empty = module(x[:0])
        assert empty.shape == (0, *y.shape[1:])
        meta = module(x.to("meta"))
        assert meta.device.type == "meta" and meta.shape == y.shape and meta.stride() == y.stride()
        if name not in COMPILED_CONV and name != "QuantConv2d channels_last_output":
            return
        torch._dynamo.reset()
        compiled = torch.compile(module, fullgraph=True, dynamic=False, backend="aot_eager")
        out = compiled(x)
        assert torch.equal(out, y) and out.stride() == y.stride()
        assert torch.equal(compiled(x[0]), single)
        torch._dynamo.reset()


def test_pool_batch0_meta_and_compile():
    pool = MaxPool2d(3, 2, 1)
    x = torch.randn(2, 5, 9, 8).contiguous(memory_format=CL)
    y = pool(x)
    assert torch.equal(y, nn.functional.max_pool2d(x, 3, 2, 1))
    assert pool(x[:0]).shape == (0, 5, 5, 4)
    meta = pool(x.to("meta"))
    assert meta.device.type == "meta" and meta.shape == y.shape
    torch._dynamo.reset()
    assert torch.equal(torch.compile(pool, fullgraph=True, backend="aot_eager")(x), y)
    torch._dynamo.reset()


def test_global_avg_pool_batch0_meta_errors():
    pool = GlobalAvgPool2d()
    pool.set_input_quant(0.1, 3)
    x = torch.randint(0, 256, (2, 5, 4, 3), dtype=torch.uint8)
    y = pool(x)
    assert y.shape == (2, 5, 1, 1) and torch.equal(pool(x.contiguous(memory_format=CL)), y)
    assert pool(x[:0]).shape == (0, 5, 1, 1)
    meta = pool(x.to("meta"))
    assert meta.device.type == "meta" and meta.shape == y.shape
    bad = torch.zeros(1, 5, 0, 3, dtype=torch.uint8)
    kind, eager = message(lambda: pool(bad))
    assert kind is ValueError and "empty image" in eager
    assert eager in compiled_message(pool, bad)


def test_meta_weights_with_real_input_are_refused():
    q = QuantLinear.from_float(nn.Linear(4, 3)).to("meta")
    with pytest.raises(ValueError, match="meta device"):
        q(torch.randn(2, 4))


@pytest.mark.parametrize("op", ["quant_conv2d", "sparse_conv2d"])
@pytest.mark.parametrize("arg,value,match", [
    ("stride", [0, 1], "stride must be"), ("stride", [1], "stride must be"), ("kernel", [3], "kernel_size must be"),
    ("padding", [-1, 0], "padding must be"), ("dilation", [1, 0], "dilation must be"),
    ("kernel", [3, 3, 3], "kernel_size must be"),
])
def test_conv_ops_reject_bad_window_arguments(op, arg, value, match):
    module = CONV["QuantConv2d static" if op == "quant_conv2d" else "SparseConv2d fp32"]
    x = torch.randn(1, 6, 6, 6)
    window = {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1]}
    window[arg] = value
    common = (x, module.packed_weight, 6, 8, window["kernel"], window["stride"], window["padding"],
              window["dilation"])
    if op == "quant_conv2d":
        args = (*common, 1, False, 0.05, 128, -math.inf, math.inf, 1.0, 0, False, False, None)
    else:
        args = (*common, False, 1.0, 0, -math.inf, math.inf)
    with pytest.raises(ValueError, match=match):
        getattr(torch.ops.edgeopt, op)(*args)
    with pytest.raises(ValueError, match=match):
        getattr(kernels, op)(*args)
    if arg == "stride":  # the dispatcher turns a bool into an int; called directly, it is refused
        with pytest.raises(ValueError, match=match):
            getattr(kernels, op)(*(args[:5] + ([True, 1],) + args[6:]))


def test_pool_op_rejects_bad_window_arguments():
    x = torch.randn(1, 3, 6, 6).contiguous(memory_format=CL)
    with pytest.raises(ValueError, match="stride must be"):
        torch.ops.edgeopt.max_pool2d(x, [2, 2], [0, 2], [0, 0], [1, 1], False)
    with pytest.raises(ValueError, match="kernel_size must be"):
        torch.ops.edgeopt.max_pool2d(x, [2], [2, 2], [0, 0], [1, 1], False)
    with pytest.raises(ValueError, match="at most half"):
        torch.ops.edgeopt.max_pool2d(x, [2, 2], [2, 2], [2, 2], [1, 1], False)
    with pytest.raises(ValueError, match="channels_last"):
        torch.ops.edgeopt.max_pool2d(x.contiguous(), [2, 2], [2, 2], [0, 0], [1, 1], False)


def test_linear_ops_reject_bad_scalars():
    q = LINEAR["QuantLinear static"]
    x = torch.randn(2, 12)
    with pytest.raises(ValueError, match="input scale"):
        torch.ops.edgeopt.quant_linear(x, q.packed_weight, 12, 7, False, 0.0, 0, -math.inf, math.inf, 1.0, 0, False)
    with pytest.raises(ValueError, match="zero point"):
        torch.ops.edgeopt.quant_linear(x, q.packed_weight, 12, 7, False, 0.1, 300, -math.inf, math.inf, 1.0, 0, False)
    with pytest.raises(ValueError, match="clamp bounds"):
        torch.ops.edgeopt.quant_linear(x, q.packed_weight, 12, 7, True, 1.0, 0, 1.0, 0.0, 1.0, 0, False)
    with pytest.raises(TypeError, match="1-D uint8"):
        torch.ops.edgeopt.fw_linear(x, torch.zeros(4), 12, 7, -math.inf, math.inf)


def test_eager_path_equals_the_op():
    # modules call edgeopt.kernels directly in eager mode; the op wraps the same function
    torch.manual_seed(5)
    x = torch.randn(3, 12)
    for module in (LINEAR[name] for name in COMPILED_LINEAR):
        with torch.no_grad():
            y = module(x)
        assert torch.equal(torch.compile(module, fullgraph=True, backend="aot_eager")(x), y)
        torch._dynamo.reset()
