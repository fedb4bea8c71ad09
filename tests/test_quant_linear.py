"""QuantLinear as a drop-in nn.Linear: numerics (SQNR), errors, torch.library op, compile, state_dict."""
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt.nn import QuantLinear

DATA_ROOT = Path(os.environ.get("EDGEOPT_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def sqnr_db(ref: torch.Tensor, test: torch.Tensor) -> float:
    noise = (ref - test).double().pow(2).mean()
    return float(10 * torch.log10(ref.double().pow(2).mean() / noise))


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return nn.Linear(257, 131)


def test_sqnr_random_activations(isa, linear):
    q = QuantLinear.from_float(linear)
    x = torch.randn(64, 257)
    with torch.no_grad():
        assert sqnr_db(linear(x), q(x)) > 30.0


def test_sqnr_real_mnist_activations(isa):
    path = DATA_ROOT / "mnist" / "mnist.npz"
    if not path.exists():
        pytest.skip(f"MNIST not found at {path} (set EDGEOPT_DATA)")
    images = np.load(path)["x_test"][:256].reshape(256, -1).astype(np.float32) / 255.0
    torch.manual_seed(0)
    layer = nn.Linear(784, 300)
    x = torch.from_numpy(images)
    for q in (QuantLinear.from_float(layer), QuantLinear.from_float(layer, calibration_data=[x[:128]])):
        with torch.no_grad():
            assert sqnr_db(layer(x), q(x)) > 30.0, q.mode


def test_leading_dims_noncontiguous_and_activation(linear):
    q = QuantLinear.from_float(linear, activation="relu6")
    x = torch.randn(257, 3, 5).permute(1, 2, 0)  # (3, 5, 257), last dim strided
    assert not x.is_contiguous()
    with torch.no_grad():
        y = q(x)
        ref = torch.clamp(linear(x), 0, 6)
    assert y.shape == (3, 5, 131)
    assert y.min() >= 0 and y.max() <= 6
    assert sqnr_db(ref, y) > 28.0
    np.testing.assert_array_equal(y.numpy(), q(x.contiguous()).numpy())


def test_no_bias_and_batch_one():
    torch.manual_seed(1)
    lin = nn.Linear(64, 48, bias=False)
    q = QuantLinear.from_float(lin)
    x = torch.randn(1, 64)
    with torch.no_grad():
        assert sqnr_db(lin(x), q(x)) > 30.0


def test_bad_inputs_raise_clear_errors(linear):
    q = QuantLinear.from_float(linear)
    with pytest.raises(TypeError, match="float32"):
        q(torch.randn(2, 257, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(\.\.\., 257\)"):
        q(torch.randn(2, 256))
    with pytest.raises(ValueError, match="NaN or Inf"):
        q(torch.full((2, 257), float("nan")))
    with pytest.raises(ValueError, match="NaN or Inf"):
        q(torch.tensor([[float("inf")] * 257]))
    meta = q(torch.empty(2, 3, 257, device="meta"))  # shapes only, as torch's own layers do
    assert meta.device.type == "meta" and meta.shape == (2, 3, 131)
    with pytest.raises(ValueError, match="mode"):
        QuantLinear.from_float(linear, mode="weird")
    with pytest.raises(ValueError, match="calibration_data or input_range"):
        QuantLinear.from_float(linear, mode="static")
    with pytest.raises(TypeError, match="nn.Linear"):
        QuantLinear.from_float(nn.Conv2d(1, 1, 1))


def test_state_dict_round_trip_is_exact(linear, tmp_path):
    q = QuantLinear.from_float(linear, mode="static", input_range=(-3.0, 4.0))
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    fresh = QuantLinear(257, 131, mode="static")
    fresh.load_state_dict(torch.load(buf))
    assert torch.equal(fresh.packed_weight, q.packed_weight)
    x = torch.randn(9, 257)
    assert torch.equal(fresh(x), q(x))
    # A whole model also survives torch.save / torch.load.
    model = nn.Sequential(q, nn.ReLU())
    torch.save(model, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    assert torch.equal(loaded(x), model(x))


def test_stale_or_mismatched_packed_weight_is_refused(linear):
    q = QuantLinear.from_float(linear)
    state = q.state_dict()
    stale = dict(state)
    stale["packed_weight"] = state["packed_weight"].clone()
    stale["packed_weight"][4] = 7  # format version
    with pytest.raises(ValueError, match="version 7"):
        QuantLinear(257, 131).load_state_dict(stale)
    with pytest.raises(ValueError, match="131x257"):
        QuantLinear(256, 131).load_state_dict(state)


def test_opcheck():
    torch.manual_seed(2)
    lin = nn.Linear(40, 24)
    q = QuantLinear.from_float(lin)
    x = torch.randn(5, 40)
    torch.library.opcheck(torch.ops.edgeopt.quant_linear.default,
                          (x, q.packed_weight, 40, 24, True, 1.0, 0, float("-inf"), float("inf"), 1.0, 0, False))
    torch.library.opcheck(torch.ops.edgeopt.quant_linear.default,
                          (x, q.packed_weight, 40, 24, False, 0.02, 128, 0.0, 6.0, 0.05, 3, True))


def test_torch_compile_fullgraph_keeps_the_op():
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 16)).eval()
    model[0] = QuantLinear.from_float(model[0])
    model[2] = QuantLinear.from_float(model[2], mode="static", input_range=(-0.2, 3.0))
    x = torch.randn(4, 32)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        out, code = run_and_get_code(compiled, x)
        expected = model(x)
    assert any("edgeopt.quant_linear" in c for c in code), "the edgeopt op is missing from the compiled code"
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_broadcast_rows_and_uninitialised_module():
    torch.manual_seed(4)
    lin = nn.Linear(8, 5)
    q = QuantLinear.from_float(lin)
    row = torch.randn(1, 8)
    np.testing.assert_array_equal(q(row.expand(3, 8)).numpy(), q(row.repeat(3, 1)).numpy())
    with pytest.raises(RuntimeError, match="no weights yet"):
        QuantLinear(8, 5)(row)


def test_mode_and_activation_travel_with_the_state_dict():
    torch.manual_seed(5)
    lin = nn.Linear(16, 6)
    q = QuantLinear.from_float(lin, mode="static", input_range=(-1.0, 1.0), activation="relu")
    fresh = QuantLinear(16, 6)  # constructed dynamic, no activation
    fresh.load_state_dict(q.state_dict())
    assert fresh.mode == "static" and fresh.activation == "relu"
    x = torch.randn(4, 16) * 3
    assert torch.equal(fresh(x), q(x))
