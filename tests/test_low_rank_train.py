"""Fine-tuning LowRankLinear: float parameters with autograd in training mode, repacked into the fused
kernel for eval; exact state_dict round trips; freeze(); the low_rank(trainable=True) pass with fit();
errors for misuse."""
import io
import math

import pytest
import torch
from torch import nn

import edgeopt.low_rank
from edgeopt.nn import LowRankLinear
from edgeopt.training.loop import FitConfig, fit


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return nn.Linear(96, 40)


def reference(module: LowRankLinear, x: torch.Tensor) -> torch.Tensor:
    """The layer in float64 from its current float parameters."""
    u, vt = module.u.detach().double(), module.vt.detach().double()
    y = x.double() @ vt.T @ u.T
    return y if module.bias is None else y + module.bias.detach().double()


def test_starts_at_the_stored_factors_and_gradients_match_autograd_reference(linear):
    frozen = LowRankLinear.from_float(linear, rank=12)
    module = LowRankLinear.from_float(linear, rank=12, trainable=True)
    assert module.trainable and not frozen.trainable
    assert [n for n, _ in module.named_parameters()] == ["u", "vt", "bias"]
    u, vt, bias = frozen.factors()
    assert torch.equal(module.u, u) and torch.equal(module.vt, vt) and torch.equal(module.bias, bias)
    x = torch.randn(2, 5, 96, requires_grad=True)
    # eval mode: the fused kernel on untouched buffers, bit-identical to the frozen layer
    assert torch.equal(module.eval()(x.detach()), frozen(x.detach()))
    # train mode: autograd through two matmuls, same values as the kernel within float rounding
    y = module.train()(x)
    assert y.shape == (2, 5, 40) and y.requires_grad
    torch.testing.assert_close(y.detach(), frozen(x.detach()), rtol=0, atol=1e-5)
    target = torch.randn(2, 5, 40)
    ((y - target) ** 2).sum().backward()
    # the same loss written out by hand with leaf copies of the parameters
    u2, vt2, b2 = (p.detach().clone().requires_grad_() for p in (module.u, module.vt, module.bias))
    x2 = x.detach().clone().requires_grad_()
    (((x2 @ vt2.T) @ u2.T + b2 - target) ** 2).sum().backward()
    for got, want in ((module.u.grad, u2.grad), (module.vt.grad, vt2.grad), (module.bias.grad, b2.grad),
                      (x.grad, x2.grad)):
        assert got is not None and got.abs().sum() > 0
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opt", ["adamw", "adamw_foreach", "sgd"])
def test_finetune_steps_change_the_output_and_eval_repacks(linear, opt):
    torch.manual_seed(1)
    module = LowRankLinear.from_float(linear, rank=8, trainable=True)
    x, target = torch.randn(64, 96), torch.randn(64, 40)
    with torch.no_grad():
        before = module.eval()(x).clone()
    packed_before = module.packed_u.clone()
    if opt == "sgd":
        optimizer = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
    else:
        optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2, foreach=(opt == "adamw_foreach"))
    module.train()
    losses = []
    for _ in range(20):
        loss = nn.functional.mse_loss(module(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    with torch.no_grad():
        after = module.eval()(x)  # repacks: the optimizer bumped the parameters' versions
    assert not torch.equal(module.packed_u, packed_before)
    assert (after - before).abs().max() > 1e-2
    # the kernel on the repacked buffers = the float computation of the trained parameters
    ref = reference(module, x)
    torch.testing.assert_close(after.double(), ref, rtol=0, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(module.train()(x).double(), ref, rtol=0, atol=1e-4)
    assert torch.equal(module.eval().unfused(x), after)  # the two-GEMM path sees the same buffers


@pytest.mark.parametrize("weight_dtype", ["fp16", "int8"])
def test_repacked_low_precision_factors_match_the_float_parameters(linear, weight_dtype):
    torch.manual_seed(2)
    module = LowRankLinear.from_float(linear, rank=16, weight_dtype=weight_dtype, trainable=True)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
    x = torch.randn(32, 96)
    for _ in range(3):
        loss = module.train()(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        y = module.eval()(x)
    ref = reference(module, x)
    assert module.weight_dtype == weight_dtype
    sqnr = 10 * torch.log10(ref.pow(2).mean() / (y.double() - ref).pow(2).mean())
    # fp16 factors: ~2^-11 relative per weight (> 55 dB); int8: 7-bit weights and u8 activations (> 25 dB)
    assert sqnr > (55.0 if weight_dtype == "fp16" else 25.0), float(sqnr)
    # and exactly what a frozen layer built from the same float factors computes
    rebuilt = LowRankLinear.from_factors(module.u.detach(), module.vt.detach(), module.bias.detach(),
                                         weight_dtype=weight_dtype)
    assert torch.equal(rebuilt(x), y)


def test_state_dict_round_trip_is_exact_and_freeze(linear, tmp_path):
    torch.manual_seed(3)
    module = LowRankLinear.from_float(linear, rank=10, weight_dtype="fp16", activation="relu", trainable=True)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    x = torch.randn(7, 96)
    loss = module.train()(x).sum()
    loss.backward()
    optimizer.step()  # parameters changed, buffers stale until eval or state_dict
    state = module.state_dict()
    assert list(state) == ["u", "vt", "bias", "packed_v", "packed_u", "_extra_state"]
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    fresh = LowRankLinear(96, 40, rank=10)  # frozen and empty: becomes trainable from the checkpoint
    fresh.load_state_dict(torch.load(buf))
    assert fresh.trainable and fresh.weight_dtype == "fp16" and fresh.activation == "relu"
    for key, value in fresh.state_dict().items():
        if key != "_extra_state":
            assert torch.equal(value, state[key]), key
    assert fresh.state_dict()["_extra_state"] == state["_extra_state"]
    with torch.no_grad():
        y = module.eval()(x)
        assert y.min() >= 0 and torch.equal(fresh.eval()(x), y)
        assert torch.equal(fresh.train()(x), module.train()(x))
    torch.save(nn.Sequential(module), tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False).eval()
    assert torch.equal(loaded(x), y)
    # freeze: same eval output, parameters gone, a frozen-only state_dict that loads into a frozen layer
    assert module.freeze() is module and not module.trainable
    assert list(module.parameters()) == [] and list(module.state_dict()) == ["packed_v", "packed_u", "_extra_state"]
    assert torch.equal(module.eval()(x), y)
    frozen = LowRankLinear(96, 40, rank=10)
    frozen.load_state_dict(module.state_dict())
    assert not frozen.trainable and torch.equal(frozen(x), y)
    # make_trainable again starts from the stored (fp16-rounded) factors
    again = frozen.make_trainable()
    assert again.trainable and torch.equal(again.eval()(x), y)


def test_no_bias_and_fp32_make_trainable_from_a_loaded_layer():
    torch.manual_seed(4)
    module = LowRankLinear.from_factors(torch.randn(20, 4), torch.randn(4, 30), None)
    module.make_trainable()
    assert module.bias is None and [n for n, _ in module.named_parameters()] == ["u", "vt"]
    x = torch.randn(3, 30)
    with torch.no_grad():
        torch.testing.assert_close(module.train()(x), module.eval()(x), rtol=0, atol=1e-5)
    fresh = LowRankLinear(30, 20, rank=4, bias=False)
    fresh.load_state_dict(module.state_dict())
    assert fresh.trainable and fresh.bias is None and torch.equal(fresh.eval()(x), module(x))


def test_misuse_errors(linear):
    frozen = LowRankLinear.from_float(linear, rank=8)
    x = torch.randn(4, 96, requires_grad=True)
    with pytest.raises(RuntimeError, match="frozen .* cannot pass gradients"):
        frozen.train()(x)
    # eval mode, no_grad, or inputs without gradient are inference and stay allowed; in eval mode the input
    # gets the gradient of the float twin (the stored factors in float)
    y = frozen.eval()(x)
    assert y.requires_grad
    (grad,) = torch.autograd.grad(y.sum(), x)
    (want,) = torch.autograd.grad(frozen.float_twin(x).sum(), x)
    torch.testing.assert_close(grad, want)
    with torch.no_grad():
        frozen.train()(x)
    frozen.train()(x.detach())
    with pytest.raises(RuntimeError, match="no float parameters"):
        frozen.repack()
    with pytest.raises(RuntimeError, match="no weights yet"):
        LowRankLinear(96, 40, rank=8).make_trainable()
    trainable = LowRankLinear.from_float(linear, rank=8, trainable=True)
    with pytest.raises(TypeError, match="float32"):
        trainable.train()(torch.randn(2, 96, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expects input \(\.\.\., 96\)"):
        trainable.train()(torch.randn(2, 95))
    # a frozen checkpoint into a trainable layer: the parameters are missing (strict)
    with pytest.raises(RuntimeError, match="Missing key.*\"u\""):
        LowRankLinear.from_float(linear, rank=8, trainable=True).load_state_dict(frozen.state_dict())
    with torch.no_grad():
        trainable.u[0, 0] = math.nan  # a diverged fine-tuning cannot be packed
    with pytest.raises(ValueError, match="NaN or Inf"):
        trainable.eval()(torch.randn(1, 96))
    with pytest.raises(ValueError, match="NaN or Inf"):
        trainable.state_dict()


class Data(torch.utils.data.TensorDataset):
    classes = ("a", "b", "c", "d")


def classifier_data(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 64, generator=g)
    w = torch.randn(64, 4, generator=torch.Generator().manual_seed(99))  # the same task for every split
    return Data(x, (x @ w).argmax(1))


def accuracy(model, data):
    x, y = data.tensors
    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).float().mean())


def test_pass_with_trainable_layers_finetunes_with_fit_then_freezes():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 4))
    train, val = classifier_data(512, 0), classifier_data(256, 1)
    fit(model, train, val, FitConfig(epochs=6, batch_size=32, lr=3e-3), progress=False)
    dense_acc = accuracy(model, val)
    model, report = edgeopt.low_rank(model.train(), rank=2, measure=False, trainable=True, skip=["4"])
    converted = [e.name for e in report if e.converted]
    assert converted == ["0", "2"]
    for name in converted:
        layer = model.get_submodule(name)
        assert isinstance(layer, LowRankLinear) and layer.trainable and layer.training
    cut_acc = accuracy(model, val)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    history = fit(model, train, val, FitConfig(epochs=4, batch_size=32, lr=3e-3), progress=False)
    assert history.best_epoch >= 1
    for n, p in model.named_parameters():  # every factor was trained
        assert not torch.equal(p, before[n]), n
    tuned_acc = accuracy(model, val)
    # seeded: dense 0.78, cut to rank 2 0.61, fine-tuned 0.65 here; fine-tuning must win back some accuracy
    assert cut_acc < dense_acc - 0.05 and tuned_acc > cut_acc + 0.01, (dense_acc, cut_acc, tuned_acc)
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    x = val.tensors[0]
    with torch.no_grad():
        expected = model.eval()(x)
    assert edgeopt.low_rank.freeze(model) is model
    assert all(not m.trainable for m in model.modules() if isinstance(m, LowRankLinear))
    assert [n for n, _ in model.named_parameters()] == ["4.weight", "4.bias"]
    with torch.no_grad():
        assert torch.equal(model(x), expected)


def test_eval_repacks_before_torch_compile(linear):
    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(6)
    model = nn.Sequential(LowRankLinear.from_float(linear, rank=8, trainable=True), nn.GELU(), nn.Linear(40, 8))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 96)
    loss = model.train()(x).pow(2).sum()
    loss.backward()
    optimizer.step()
    stale = model[0].packed_u.clone()
    model.eval()  # repacks here, not only at the next eager forward
    assert not torch.equal(model[0].packed_u, stale)
    with torch.no_grad():
        out, code = run_and_get_code(torch.compile(model, fullgraph=True), x)
        expected = model(x)
    assert any("edgeopt.low_rank_linear" in c for c in code)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
