"""SparseLinear: numerics against nn.Linear / QuantLinear, state_dict round trip, errors, ops."""
import io

import pytest
import torch
from torch import nn

from edgeopt.nn import QuantLinear, SparseLinear


def tol(k):
    return 1e-6 * k + 1e-5


def pruned_linear(n_in=257, n_out=131, nb=16, kb=4, density=0.3, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(n_in, n_out)
    bm = torch.rand(-(-n_out // nb), -(-n_in // kb)) < density
    mask = bm.repeat_interleave(nb, 0).repeat_interleave(kb, 1)[:n_out, :n_in]
    return lin, mask


@pytest.mark.parametrize("block_cols", [8, 16])
def test_fp32_matches_masked_linear(isa, block_cols):
    lin, mask = pruned_linear(nb=block_cols, kb=1)
    s = SparseLinear.from_float(lin, mask, block_cols=block_cols)
    x = torch.randn(9, 257)
    with torch.no_grad():
        ref = nn.functional.linear(x.double(), (lin.weight * mask).double(), lin.bias.double())
        torch.testing.assert_close(s(x).double(), ref, rtol=0, atol=tol(257) * ref.abs().max())
    assert torch.equal(s.dense_weight(), (lin.weight * mask).detach())
    assert 0.2 < s.density < 0.4


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_equals_quant_linear_on_the_pruned_weight(isa, mode):
    # Same quantization and epilogue as the dense int8 layer: identical outputs.
    lin, mask = pruned_linear()
    with torch.no_grad():
        lin.weight.mul_(mask)
    x = torch.randn(2, 5, 257)
    kw = {"input_range": (-3.0, 3.0)} if mode == "static" else {}
    s = SparseLinear.from_float(lin, dtype="int8", mode=mode, activation="relu", **kw)
    q = QuantLinear.from_float(lin, mode=mode, activation="relu", **kw)
    assert torch.equal(s(x), q(x))
    assert torch.equal(s.dense_weight(), q.dequantized_weight())
    ref = torch.relu(lin(x))
    sqnr = 10 * torch.log10(ref.pow(2).mean() / (s(x) - ref).pow(2).mean())
    assert sqnr > 25


def test_state_dict_round_trip(tmp_path):
    lin, mask = pruned_linear()
    for dtype in ("fp32", "int8"):
        s = SparseLinear.from_float(lin, mask, dtype=dtype, input_range=(-2.0, 4.0) if dtype == "int8" else None,
                                    activation="relu6")
        buf = io.BytesIO()
        torch.save(s.state_dict(), buf)
        buf.seek(0)
        fresh = SparseLinear(257, 131)  # dtype, mode, activation and block come from the checkpoint
        fresh.load_state_dict(torch.load(buf))
        assert (fresh.dtype, fresh.mode, fresh.activation, fresh.block_cols) == (s.dtype, s.mode, "relu6", 16)
        assert torch.equal(fresh.packed_weight, s.packed_weight)
        x = torch.randn(4, 257)
        assert torch.equal(fresh(x), s(x))
        torch.save(nn.Sequential(s), tmp_path / "m.pt")
        assert torch.equal(torch.load(tmp_path / "m.pt", weights_only=False)(x), s(x))
    state = s.state_dict()
    with pytest.raises(ValueError, match="131x257"):
        SparseLinear(256, 131).load_state_dict(state)
    stale = dict(state)
    stale["packed_weight"] = state["packed_weight"].clone()
    stale["packed_weight"][4] = 7
    with pytest.raises(ValueError, match="version 7"):
        SparseLinear(257, 131).load_state_dict(stale)
    wrong = dict(state)
    wrong["_extra_state"] = dict(state["_extra_state"], dtype="fp32")
    with pytest.raises(ValueError, match="int8"):
        SparseLinear(257, 131).load_state_dict(wrong)


def test_errors():
    lin, mask = pruned_linear()
    s = SparseLinear.from_float(lin, mask)
    with pytest.raises(TypeError, match="float32"):
        s(torch.randn(2, 257, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(\.\.\., 257\)"):
        s(torch.randn(2, 256))
    with pytest.raises(ValueError, match="dtype"):
        SparseLinear.from_float(lin, dtype="int4")
    with pytest.raises(ValueError, match="block_cols"):
        SparseLinear.from_float(lin, block_cols=4)
    with pytest.raises(ValueError, match="mask shape"):
        SparseLinear.from_float(lin, mask[:, :-1])
    with pytest.raises(TypeError, match="nn.Linear"):
        SparseLinear.from_float(nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="calibration_data"):
        SparseLinear.from_float(lin, dtype="int8", mode="static")
    with pytest.raises(RuntimeError, match="no weights yet"):
        SparseLinear(4, 4)(torch.randn(1, 4))
    q = SparseLinear.from_float(lin, dtype="int8")
    with pytest.raises(ValueError, match="NaN or Inf"):
        q(torch.full((1, 257), float("nan")))


def test_all_zero_and_leading_dims():
    lin = nn.Linear(40, 24)
    s = SparseLinear.from_float(lin, torch.zeros(24, 40, dtype=torch.bool), dtype="int8")
    x = torch.randn(3, 2, 40)
    assert s.density == 0.0
    torch.testing.assert_close(s(x), lin.bias.detach().expand(3, 2, 24), rtol=0, atol=0)


def test_opcheck():
    lin, mask = pruned_linear(40, 24, 8)
    f = SparseLinear.from_float(lin, mask, block_cols=8)
    q = SparseLinear.from_float(lin, mask, dtype="int8")
    x = torch.randn(5, 40)
    torch.library.opcheck(torch.ops.edgeopt.sparse_linear.default, (x, f.packed_weight, 40, 24, float("-inf"), 0.5))
    torch.library.opcheck(torch.ops.edgeopt.sparse_quant_linear.default,
                          (x, q.packed_weight, 40, 24, True, 1.0, 0, float("-inf"), float("inf")))
    torch.library.opcheck(torch.ops.edgeopt.sparse_quant_linear.default,
                          (x[:1], q.packed_weight, 40, 24, False, 0.05, 128, 0.0, 6.0))


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_torch_compile_fullgraph_keeps_the_op(dtype):
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 16)).eval()
    model[0] = SparseLinear.from_float(model[0], torch.rand(64, 32) < 0.3, dtype=dtype)
    x = torch.randn(4, 32)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        out, code = run_and_get_code(compiled, x)
        expected = model(x)
    name = "edgeopt.sparse_linear" if dtype == "fp32" else "edgeopt.sparse_quant_linear"
    assert any(name in c for c in code), "the edgeopt op is missing from the compiled code"
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
