"""QuantConv2d: accuracy against nn.Conv2d, memory formats, uint8 chaining, state_dict, errors, and the
torch.library op (opcheck, torch.compile)."""
import io

import pytest
import torch
from torch import nn

from edgeopt.nn import QuantConv2d


def sqnr_db(ref, test):
    return float(10 * torch.log10(ref.pow(2).mean() / (ref - test).pow(2).mean()))


CONVS = [
    dict(in_channels=3, out_channels=16, kernel_size=7, stride=2, padding=3),
    dict(in_channels=13, out_channels=29, kernel_size=3, padding=1),
    dict(in_channels=16, out_channels=32, kernel_size=1),
    dict(in_channels=16, out_channels=24, kernel_size=1, stride=2),
    dict(in_channels=24, out_channels=24, kernel_size=3, padding=1, groups=24),
    dict(in_channels=40, out_channels=40, kernel_size=5, stride=2, padding=2, groups=40),
    dict(in_channels=12, out_channels=18, kernel_size=3, padding=2, dilation=2, groups=3),
    dict(in_channels=8, out_channels=8, kernel_size=3, padding="same"),
]


@pytest.mark.parametrize("cfg", CONVS, ids=lambda c: "-".join(f"{k[0]}{v}" for k, v in c.items()))
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_float_conv(isa, cfg, channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(**cfg).eval()
    x = torch.randn(2, cfg["in_channels"], 15, 14)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    q = QuantConv2d.from_float(conv, input_range=(float(x.min()), float(x.max())))
    with torch.no_grad():
        ref = conv(x)
        y = q(x)
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert sqnr_db(ref, y) > 30
    # The integer path is exact: against the float conv of the dequantized operands the error is rounding.
    xs, xz = q._input_params
    xq = (torch.clamp(torch.round(x / xs) + xz, 0, 255) - xz) * xs
    exact = nn.functional.conv2d(xq, q.dequantized_weight(), conv.bias, q.stride, q.padding, q.dilation, q.groups)
    torch.testing.assert_close(y, exact, rtol=1e-4, atol=1e-4)


def test_fused_activation_and_dynamic_mode():
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 10, 3, padding=1)
    x = torch.randn(1, 6, 9, 9) * 3
    for act, fn in (("relu", torch.relu), ("relu6", lambda t: t.clamp(0, 6)), ((-0.5, 0.5), lambda t: t.clamp(-0.5, 0.5))):
        q = QuantConv2d.from_float(conv, mode="dynamic", activation=act)
        with torch.no_grad():
            y, ref = q(x), fn(conv(x))
        assert float(y.min()) >= float(ref.min()) - 1e-6 and float(y.max()) <= float(ref.max()) + 0.05
        assert sqnr_db(ref, y) > 28


def test_uint8_chain_equals_float_requantization():
    torch.manual_seed(2)
    a, b = nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 12, 1)
    x = torch.randn(1, 8, 10, 10).contiguous(memory_format=torch.channels_last)
    qa = QuantConv2d.from_float(a, input_range=(-4, 4), activation="relu")
    with torch.no_grad():
        mid = qa(x)
    qb = QuantConv2d.from_float(b, input_range=(0.0, float(mid.max())))
    qa.set_output_quant(*qb._input_params)
    with torch.no_grad():
        mid_u8 = qa(x)
        assert mid_u8.dtype == torch.uint8 and mid_u8.is_contiguous(memory_format=torch.channels_last)
        y_chain = qb(mid_u8)
        y_float = qb(mid)
    # Same requantization rule (round half to even) on both routes, up to one step where fma vs mul+add
    # lands a value on the other side of a rounding boundary.
    diff = (y_chain - y_float).abs().max()
    assert diff <= qb.dequantized_weight().abs().sum(dim=(1, 2, 3)).max() * qb._input_params[0]
    assert sqnr_db(y_float, y_chain) > 35


def test_state_dict_and_torch_save_round_trip_exactly():
    torch.manual_seed(3)
    conv = nn.Conv2d(5, 7, 3, stride=2, padding=1)
    q = QuantConv2d.from_float(conv, input_range=(-2, 3), activation="relu6")
    q.set_output_quant(0.05, 3)
    fresh = QuantConv2d(5, 7, 3, stride=2, padding=1)
    fresh.load_state_dict(q.state_dict())
    x = torch.randn(1, 5, 8, 8)
    assert torch.equal(fresh(x), q(x))
    buf = io.BytesIO()
    torch.save(q, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert torch.equal(loaded(x), q(x))


def test_load_rejects_wrong_or_tampered_weights():
    q = QuantConv2d.from_float(nn.Conv2d(4, 6, 3), input_range=(0, 1))
    other = QuantConv2d(4, 6, 5)
    with pytest.raises(ValueError, match="packed filter"):
        other.load_state_dict(q.state_dict())
    sd = q.state_dict()
    sd["packed_weight"] = sd["packed_weight"].clone()
    sd["packed_weight"][-1] = 5
    with pytest.raises(ValueError, match="rejected"):
        QuantConv2d(4, 6, 3).load_state_dict(sd)


def test_bad_inputs_raise_clear_errors():
    conv = nn.Conv2d(4, 6, 3)
    with pytest.raises(ValueError, match="padding_mode"):
        QuantConv2d.from_float(nn.Conv2d(4, 6, 3, padding_mode="reflect"), input_range=(0, 1))
    with pytest.raises(ValueError, match="calibration_data or input_range"):
        QuantConv2d.from_float(conv, mode="static")
    assert QuantConv2d.from_float(conv).mode == "dynamic"  # the rule of every int8 module: no range, dynamic
    with pytest.raises(RuntimeError, match="no weights"):
        QuantConv2d(4, 6, 3)(torch.zeros(1, 4, 5, 5))
    q = QuantConv2d.from_float(conv, input_range=(0, 1))
    with pytest.raises(ValueError, match=r"expects input \(N, 4, H, W\)"):
        q(torch.zeros(1, 3, 5, 5))
    with pytest.raises(TypeError, match="float32 or uint8"):
        q(torch.zeros(1, 4, 5, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        q(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match="NaN or Inf"):
        q(torch.full((1, 4, 5, 5), float("nan")))
    with pytest.raises(TypeError, match="dynamic layer cannot take uint8"):
        QuantConv2d.from_float(conv, mode="dynamic")(torch.zeros(1, 4, 5, 5, dtype=torch.uint8))


def test_opcheck_and_compile_keep_the_op():
    torch.manual_seed(4)
    q = QuantConv2d.from_float(nn.Conv2d(6, 8, 3, padding=1, groups=2), input_range=(-3, 3), activation="relu")
    x = torch.randn(1, 6, 7, 7).contiguous(memory_format=torch.channels_last)
    for xin in (x, x.contiguous(), x[0]):  # channels_last, NCHW, unbatched
        args = (xin, q.packed_weight, 6, 8, [3, 3], [1, 1], [1, 1], [1, 1], 2, False, *q._input_params, 0.0,
                float("inf"), 1.0, 0, False, False, None)
        torch.library.opcheck(torch.ops.edgeopt.quant_conv2d.default, args)
    compiled = torch.compile(q, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), q(x), rtol=0, atol=0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_residual_matches_relu_of_sum(channels_last):
    torch.manual_seed(5)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(1, 8, 9, 9)
    identity = torch.randn(1, 8, 9, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    q = QuantConv2d.from_float(conv, input_range=(-4, 4), activation="relu")
    plain = QuantConv2d.from_float(conv, input_range=(-4, 4))
    with torch.no_grad():
        fused = q(x, identity)
        torch.testing.assert_close(fused, torch.relu(plain(x) + identity), rtol=1e-5, atol=1e-5)
        compiled = torch.compile(q, fullgraph=True)
        torch.testing.assert_close(compiled(x, identity), fused, rtol=0, atol=0)
    with pytest.raises(ValueError, match="residual must be float32"):
        q(x, identity[:, :4])
