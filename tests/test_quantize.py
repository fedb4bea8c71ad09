"""edgeopt.quantize: BN folding, activation fusion, observers, conversion, report, round trip, errors."""
import io
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgeopt
from edgeopt.models import get_model
from edgeopt.nn import QuantConv2d, QuantLinear
from edgeopt.quantize import fold_batchnorm, fusion_plan, sqnr_db
from edgeopt.quantize import quantize as lower


def quantize(*args, **kwargs):
    """The lowering with the rule-based kernel choice: these tests pin what the int8 path does, not which
    kernel this machine finds fastest today (tests/test_lowering.py covers the measured choice)."""
    kwargs.setdefault("measure", False)
    return lower(*args, **kwargs)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so folding is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model.eval()


def batches(shape, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


# ----------------------------------------------------------------------------- BatchNorm folding

@pytest.mark.parametrize("bias,groups", [(False, 1), (True, 1), (False, 4)])
def test_fold_batchnorm_conv_matches_conv_then_bn(bias, groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, padding=1, groups=groups, bias=bias)
    bn = randomize_bn(nn.BatchNorm2d(12))
    x = torch.randn(2, 8, 9, 7)
    with torch.no_grad():
        ref = bn(conv(x))
        folded = fold_batchnorm(conv, bn)
        torch.testing.assert_close(folded(x), ref, rtol=1e-5, atol=1e-5)
    assert folded is not conv and conv.bias is (None if not bias else conv.bias)  # the original is untouched


def test_fold_batchnorm1d_into_linear_and_non_affine_bn():
    torch.manual_seed(1)
    linear = nn.Linear(10, 6)
    for bn in (randomize_bn(nn.BatchNorm1d(6)), randomize_bn(nn.BatchNorm1d(6, affine=False))):
        x = torch.randn(5, 10)
        with torch.no_grad():
            torch.testing.assert_close(fold_batchnorm(linear, bn)(x), bn(linear(x)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="features"):
        fold_batchnorm(linear, nn.BatchNorm1d(7))


# ----------------------------------------------------------------------------- fusion detection

def test_fusion_resnet18_keeps_the_relu_after_the_residual_add():
    plan = fusion_plan(get_model("resnet18"), torch.randn(1, 3, 32, 32))
    assert plan["conv1"] == {"bn": "bn1", "activation": "relu"}
    for stage in range(1, 5):
        for block in range(2):
            p = f"layer{stage}.{block}"
            assert plan[f"{p}.conv1"] == {"bn": f"{p}.bn1", "activation": "relu"}
            # bn2 is followed by `out + identity`, and the shared relu applies to the sum: not fusable
            assert plan[f"{p}.conv2"] == {"bn": f"{p}.bn2", "activation": None}
        if stage > 1:
            assert plan[f"layer{stage}.0.downsample.0"] == {"bn": f"layer{stage}.0.downsample.1", "activation": None}
    assert plan["fc"] == {"bn": None, "activation": None}
    assert len(plan) == 21


def test_fusion_mobilenet_v2():
    model = get_model("mobilenet_v2_cifar", width_mult=0.25)
    plan = fusion_plan(model, torch.randn(1, 3, 32, 32))
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert set(plan) == set(convs) | {"classifier.1"}
    for name in convs:
        # conv-BN-ReLU6 blocks (Conv2dNormActivation) name their conv "<block>.0"; the projection conv of
        # each inverted residual is a bare conv + BN (the linear bottleneck): no activation
        assert plan[name] == {"bn": name[:-1] + "1" if name.endswith(".0") else name[:-1] + str(int(name[-1]) + 1),
                              "activation": "relu6" if name.endswith(".0") else None}, name
    assert plan["features.0.0"] == {"bn": "features.0.1", "activation": "relu6"}
    assert plan["features.2.conv.1.0"]["activation"] == "relu6"  # the depthwise conv
    assert plan["features.2.conv.2"] == {"bn": "features.2.conv.3", "activation": None}  # linear bottleneck


def test_fusion_vgg_audio():
    plan = fusion_plan(get_model("vgg_audio"), torch.randn(1, 1, 64, 32))
    convs = ["features.0", "features.4", "features.7", "features.11", "features.14", "features.18", "features.21"]
    for i, name in enumerate(convs):
        bn = f"features.{int(name.split('.')[1]) + 1}"
        assert plan[name] == {"bn": bn, "activation": "relu"}
    assert plan["classifier.1"] == {"bn": None, "activation": None}


class Functional(nn.Module):
    """Activation spellings, a conv output used twice, a module called twice, BN1d after a Linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 1)
        self.c4 = nn.Conv2d(8, 8, 1)
        self.c5 = nn.Conv2d(8, 8, 1)
        self.shared = nn.Conv2d(8, 8, 1)
        self.tanh_clamp = nn.Hardtanh(-1.0, 2.0)
        self.fc = nn.Linear(8, 6)
        self.bn = nn.BatchNorm1d(6)
        self.fc2 = nn.Linear(6, 4)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = torch.clamp(self.c2(x), 0.0, 6.0)
        y = self.c3(x)
        x = y.relu() + y  # y has two users: no fusion
        x = self.tanh_clamp(self.c4(x))
        x = self.c5(x).clamp(min=-0.5)
        x = self.shared(self.shared(x))
        x = F.hardtanh(self.bn(self.fc(x.mean((2, 3)))), -3.0, 3.0)
        return self.fc2(x)


def test_fusion_functional_spellings_and_multi_use():
    model = randomize_bn(Functional())
    plan = fusion_plan(model, torch.randn(2, 3, 8, 8))
    assert plan["c1"]["activation"] == "relu"
    assert plan["c2"]["activation"] == "relu6"
    assert plan["c3"]["activation"] is None
    assert plan["c4"]["activation"] == (-1.0, 2.0)
    assert plan["c5"]["activation"] == (-0.5, math.inf)
    assert plan["shared"] == {"bn": None, "activation": None}
    assert plan["fc"] == {"bn": "bn", "activation": (-3.0, 3.0)}


# ----------------------------------------------------------------------------- observers

def single_linear_range(data, **kwargs):
    model = nn.Sequential(nn.Linear(data[0].shape[-1], 3))
    _, report = quantize(model, data, progress=False, **kwargs)
    return report["0"].input_range


def test_observers_on_known_distributions():
    g = torch.Generator().manual_seed(3)
    data = [torch.randn(500, 16, generator=g) for _ in range(4)]
    data[2][7, 3] = 40.0  # one outlier
    data[1][0, 0] = -25.0
    values = torch.cat([d.flatten() for d in data]).double().numpy()
    lo, hi = single_linear_range(data, observer="minmax")
    assert (lo, hi) == (-25.0, 40.0)
    lo, hi = single_linear_range(data, observer="percentile", percentile=99.9)
    np.testing.assert_allclose([lo, hi], np.percentile(values, [0.1, 99.9]), rtol=1e-6)
    lo, hi = single_linear_range(data, observer="percentile", percentile=99.99)
    np.testing.assert_allclose([lo, hi], np.percentile(values, [0.01, 99.99]), rtol=1e-6)
    assert hi < 5.0  # the outlier no longer sets the range
    lo, hi = single_linear_range(data, observer="percentile", percentile=100.0)
    assert (lo, hi) == (-25.0, 40.0)
    # mse: 32k values, so keeping the two outliers costs less rounding noise than clipping them would
    lo, hi = single_linear_range(data, observer="mse")
    assert lo < -20.0 and hi > 35.0
    gaussian = [torch.randn(4000, 16, generator=g) for _ in range(2)]
    lo, hi = single_linear_range(gaussian, observer="mse")
    full_lo, full_hi = single_linear_range(gaussian, observer="minmax")
    assert full_lo < lo < -2.5 and 2.5 < hi < full_hi  # the sparse tails are clipped, not the bulk


def test_mse_observer_keeps_a_uniform_range_and_relu_inputs_start_at_zero():
    g = torch.Generator().manual_seed(4)
    uniform = [torch.rand(400, 8, generator=g) * 4 - 1 for _ in range(3)]
    lo, hi = single_linear_range(uniform, observer="mse")
    assert lo == pytest.approx(-1.0, abs=0.1) and hi == pytest.approx(3.0, abs=0.1)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    _, report = quantize(model, uniform, progress=False)
    assert report["2"].input_range[0] == 0.0 and report["0"].activation == "relu"


# ----------------------------------------------------------------------------- conversion and report

class Mixed(nn.Module):
    """Layers edgeopt converts next to layers it cannot."""

    def __init__(self):
        super().__init__()
        self.conv1d = nn.Conv1d(4, 4, 3, padding=1)
        self.reflect = nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect")
        self.attn = nn.MultiheadAttention(4, 1, batch_first=True)
        self.direct = nn.Linear(4, 4)
        self.wide = nn.Linear(4, 4).double()
        self.unused = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)
        self.skipped = nn.Linear(3, 3)

    def forward(self, x):                                # x: (N, 1, 4, 4)
        x = self.reflect(x).mean(3)                      # (N, 4, 4)
        x = self.conv1d(x).transpose(1, 2)               # (N, 4, 4)
        x = self.attn(x, x, x, need_weights=False)[0]
        x = F.linear(x, self.direct.weight)              # the model reads the weight itself
        x = self.wide(x.double()).float()
        return self.skipped(self.head(x.mean(1)))


def test_unconvertible_layers_are_reported_and_left_float():
    torch.manual_seed(0)
    model = Mixed().eval()
    data = batches((2, 1, 4, 4))
    qmodel, report = quantize(model, data, skip=["skipped"], progress=False)
    reasons = {r.name: r.reason for r in report.not_converted}
    assert "Conv1d" in reasons["conv1d"]
    assert "padding_mode" in reasons["reflect"]
    assert "MultiheadAttention" in reasons["attn.out_proj"]
    assert "parameters directly" in reasons["direct"]
    assert "float64" in reasons["wide"]
    assert "not called" in reasons["unused"]
    assert reasons["skipped"] == "skipped by request"
    assert [r.name for r in report.converted] == ["head"]
    assert isinstance(qmodel.get_submodule("head"), QuantLinear)
    assert type(qmodel.get_submodule("skipped")) is nn.Linear
    with torch.no_grad():
        assert sqnr_db(model(data[0]), qmodel(data[0])) > 30


class Branchy(nn.Module):
    """Data-dependent control flow: not traceable by torch.fx."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)
        self.never = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = x.mean((2, 3))
        return self.fc(x) if x.sum() > -1e9 else self.never(x)


def test_untraceable_model_falls_back_to_leaf_modules():
    model = randomize_bn(Branchy())
    data = batches((2, 3, 8, 8))
    qmodel, report = quantize(model, data, progress=False)
    assert not report.traced and "control flow" in report.trace_error
    assert "not traceable" in str(report) and "trace error" in str(report)
    assert report["never"].reason == "not reached by the calibration data"
    assert report["fc"].converted and report["fc"].activation is None and report["fc"].folded_bn is None
    assert type(qmodel) is Branchy and type(qmodel.bn) is nn.BatchNorm2d  # nothing folded
    assert report["conv"].converted and report["conv"].activation is None
    with torch.no_grad():
        assert sqnr_db(model(data[0]), qmodel(data[0])) > 25


def test_resnet_conversion_report_and_numerics():
    torch.manual_seed(0)
    model = randomize_bn(get_model("resnet10_cifar_slim"))
    data = batches((2, 3, 32, 32))
    qmodel, report = quantize(model, data, progress=False)
    assert report.traced and len(report.converted) == len(report) == 13  # stem, 8 block convs, 3 downsample, fc
    assert isinstance(qmodel.get_submodule("layer1.0.conv1"), QuantConv2d)
    assert report["layer1.0.conv1"].activation == "relu" and report["layer1.0.conv1"].folded_bn == "layer1.0.bn1"
    for r in report:
        assert r.sqnr_db > 25, r
        assert r.input_range[0] <= 0.0 <= r.input_range[1]
    # the folded BatchNorms and the fused ReLUs are gone, the residual adds and the ReLUs after them are in
    # the convs' epilogues
    names = dict(qmodel.named_modules())
    assert "bn1" not in names and "layer1.0.bn2" not in names and "layer1.0.relu" not in names
    for block in ("layer1.0", "layer2.0", "layer3.0", "layer4.0"):
        assert report[f"{block}.conv2"].residual_add and report[f"{block}.conv2"].activation == "relu"
    assert not any(n.op == "call_function" for n in qmodel.graph.nodes if "add" in n.name)
    with torch.no_grad():
        ref, out = model(data[0]), qmodel(data[0])
    assert report.model_sqnr_db == pytest.approx(sqnr_db(ref, out))
    assert report.model_sqnr_db > 20
    text = str(report)
    assert "layer1.0.conv1" in text and "+layer1.0.bn1" in text and "relu" in text
    json.dumps(report.to_dict())
    assert report.calibration_samples == 6 and report.calibration_batches == 3


def test_model_is_not_modified_unless_inplace():
    model = randomize_bn(nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qmodel, report = quantize(model, batches((4, 6)), progress=False)
    assert model.training and type(model[0]) is nn.Linear
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert report["0"].folded_bn == "1" and report["0"].activation == "relu"
    assert qmodel is not model and not qmodel.training

    branchy = randomize_bn(Branchy())
    qmodel, _ = quantize(branchy, batches((1, 3, 8, 8)), inplace=True, progress=False)
    assert qmodel is branchy and isinstance(branchy.fc, QuantLinear)


def test_calibration_data_forms():
    model = nn.Sequential(nn.Linear(5, 3))
    x = batches((4, 5))
    labels = [torch.zeros(4, dtype=torch.long)] * 3
    ranges = [quantize(model, form, progress=False, observer="minmax")[1]["0"].input_range for form in (
        x, list(zip(x, labels)), [[a, b] for a, b in zip(x, labels)], iter(x),
        torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.cat(x), torch.cat(labels)), batch_size=4))]
    assert all(r == ranges[0] for r in ranges)
    _, report = quantize(model, torch.cat(x), progress=False)  # one tensor = one batch
    assert report.calibration_batches == 1 and report.calibration_samples == 12


def test_bad_arguments_raise_clear_errors():
    model = nn.Sequential(nn.Linear(5, 3))
    with pytest.raises(ValueError, match="empty"):
        quantize(model, [], progress=False)
    with pytest.raises(ValueError, match="empty"):
        quantize(model, iter(()), progress=False)
    with pytest.raises(ValueError, match=r"calibration batch 0 \(input \(2, 7\)"):
        quantize(model, [torch.randn(2, 7)], progress=False)
    with pytest.raises(ValueError, match="calibration batch 1"):
        quantize(model, [torch.randn(2, 5), torch.randn(2, 4)], progress=False)
    with pytest.raises(TypeError, match="dtype torch.int64"):
        quantize(model, [torch.ones(2, 5, dtype=torch.long)], progress=False)
    with pytest.raises(TypeError, match="str"):
        quantize(model, ["abc"], progress=False)
    with pytest.raises(TypeError, match="iterable"):
        quantize(model, 3, progress=False)
    with pytest.raises(ValueError, match="observer"):
        quantize(model, [torch.randn(2, 5)], observer="kl", progress=False)
    with pytest.raises(ValueError, match="percentile"):
        quantize(model, [torch.randn(2, 5)], percentile=0, progress=False)
    with pytest.raises(ValueError, match="nope"):
        quantize(model, [torch.randn(2, 5)], skip=["nope"], progress=False)


def test_progress_is_shown_on_request(capsys):
    model = nn.Sequential(nn.Linear(5, 3))
    quantize(model, batches((2, 5)), progress=False)
    assert capsys.readouterr().err == ""
    quantize(model, batches((2, 5)), progress=True)
    assert "calibrating" in capsys.readouterr().err


def test_package_attribute_is_the_pass():
    import edgeopt.quantize as module  # binding the submodule must not hide the function

    assert callable(edgeopt.quantize) and edgeopt.quantize is module
    _, report = edgeopt.quantize(nn.Sequential(nn.Linear(5, 3)), batches((2, 5)), progress=False, measure=False)
    assert report.converted


# ----------------------------------------------------------------------------- round trip

def small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 16, 1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 10))


@pytest.mark.parametrize("u8", [False, True])
def test_round_trip_torch_save_and_state_dict_is_exact(tmp_path, u8):
    torch.manual_seed(0)
    model = randomize_bn(small_cnn())
    qmodel, report = quantize(model, batches((2, 3, 8, 8)), u8_between_layers=u8, progress=False)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        y = qmodel(x)
    torch.save(qmodel, tmp_path / "q.pt")
    loaded = torch.load(tmp_path / "q.pt", weights_only=False)
    buf = io.BytesIO()
    torch.save(qmodel.state_dict(), buf)
    buf.seek(0)
    # a freshly built quantized model: another initialisation, other calibration data
    torch.manual_seed(1)
    fresh, _ = quantize(randomize_bn(small_cnn(), seed=5), batches((1, 3, 8, 8), n=1, seed=9),
                        u8_between_layers=u8, progress=False)
    fresh.load_state_dict(torch.load(buf))
    with torch.no_grad():
        assert torch.equal(loaded(x), y)
        assert torch.equal(fresh(x), y)
    assert set(fresh.state_dict()) == set(qmodel.state_dict())


def test_quantize_linear_layers_still_works():
    from edgeopt.quantize_linear import quantize_linear_layers

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    data = batches((4, 8))
    with torch.no_grad():
        ref = model(data[0])
    q, report = quantize_linear_layers(model, "static", data, skip=["2"])
    assert q is model and isinstance(model[0], QuantLinear) and type(model[2]) is nn.Linear
    assert [r.converted for r in report] == [True, False] and report[1].reason == "skipped by request"
    with torch.no_grad():
        assert sqnr_db(ref, model(data[0])) > 30
    dyn, _ = quantize_linear_layers(nn.Sequential(nn.Linear(8, 4)))
    assert dyn[0].mode == "dynamic"
    with pytest.raises(ValueError, match="calibration_data"):
        quantize_linear_layers(nn.Sequential(nn.Linear(8, 4)), "static")
    with pytest.raises(ValueError, match="empty"):
        quantize_linear_layers(nn.Sequential(nn.Linear(8, 4)), "static", [])


@pytest.mark.filterwarnings("ignore:Using padding=.same.")
def test_a_layer_the_module_refuses_stays_float_with_the_reason():
    model = nn.Sequential(nn.Conv2d(3, 4, 4, padding="same"), nn.ReLU(), nn.Conv2d(4, 4, 3))
    qmodel, report = quantize(model, batches((1, 3, 8, 8)), progress=False)
    assert not report["0"].converted and "refused it" in report["0"].reason and "QuantConv2d" in report["0"].reason
    assert report["0"].activation is None and report["2"].converted
    assert type(qmodel.get_submodule("0")) is nn.Conv2d and "1" in dict(qmodel.named_modules())  # ReLU kept
    with torch.no_grad():
        x = torch.randn(1, 3, 8, 8)
        assert sqnr_db(model(x), qmodel(x)) > 25


def test_a_one_channel_stem_stays_float_with_its_batchnorm_folded():
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                       nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.Conv2d(8, 4, 1)))
    data = batches((2, 1, 6, 10))
    qmodel, report = quantize(model, data, progress=False)
    stem = report["0"]
    assert not stem.converted and "too few" in stem.reason and stem.folded_bn == "1"
    assert type(qmodel.get_submodule("0")) is nn.Conv2d and "1" not in dict(qmodel.named_modules())
    assert report["3"].converted and report["3"].activation == "relu"  # depthwise: 8-bit weights, converted
    with torch.no_grad():
        assert sqnr_db(model(data[0]), qmodel(data[0])) > 30


def test_gptq_rounding_stays_on_the_grid_and_lowers_the_output_error():
    from edgeopt.nn._qparams import WEIGHT_MAX
    from edgeopt.quantize import gptq_round

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(24, 200, generator=g)
    x = torch.randn(3000, 200, generator=g) @ torch.randn(200, 200, generator=g) * 0.1 + 0.3  # correlated
    q = gptq_round(weight, x.T @ x, WEIGHT_MAX)
    scale = weight.abs().amax(1, keepdim=True) / WEIGHT_MAX
    nearest = torch.round(weight / scale) * scale
    torch.testing.assert_close(q / scale, torch.round(q / scale), atol=1e-4, rtol=0)
    assert torch.equal(q.abs().amax(1), weight.abs().amax(1))  # the row maxima are pinned: same scales
    error = lambda w: float(((x @ (w - weight).T) ** 2).mean())  # noqa: E731
    assert error(q) < 0.7 * error(nearest)
    linear = nn.Linear(200, 24)
    linear.weight.data = q
    torch.testing.assert_close(QuantLinear.from_float(linear).dequantized_weight(), q, atol=1e-6, rtol=0)


def test_weight_rounding_option():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    data = batches((64, 32))
    near, r_near = quantize(model, data, weight_rounding="nearest", progress=False)
    gptq, r_gptq = quantize(model, data, progress=False)
    assert r_near["0"].weight_rounding == "nearest" and r_gptq["0"].weight_rounding == "gptq"
    from edgeopt.nn._qparams import quantize_weight_per_channel
    q, scale = quantize_weight_per_channel(model[0].weight)
    torch.testing.assert_close(near.get_submodule("0").dequantized_weight(), q.float() * scale[:, None])
    assert r_gptq["0"].sqnr_db > r_near["0"].sqnr_db
    with pytest.raises(ValueError, match="weight_rounding"):
        quantize(model, data, weight_rounding="adaround", progress=False)


class ViewAfterConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8 * 4 * 4, 2)

    def forward(self, x):
        y = self.b(torch.relu(self.a(x)))
        z = self.c(y)
        return self.fc(z.view(z.shape[0], -1)), y  # .view needs NCHW strides; y is a model output


def test_channels_last_hand_off_only_where_no_one_can_tell():
    model = ViewAfterConv().eval()
    data = batches((2, 3, 4, 4))
    qmodel, report = quantize(model, data, u8_between_layers=True, progress=False)
    assert not report["a"].channels_last_output  # b returns the format it gets, and b feeds the output
    assert report["a"].u8_output and report["a"].u8_output_to == ("b",)
    assert not report["b"].channels_last_output and not report["b"].u8_output  # feeds the output and c
    assert not report["c"].channels_last_output  # .view
    with torch.no_grad():
        out, y = qmodel(data[0])
        ref_out, ref_y = model(data[0])
    assert y.is_contiguous() and y.dtype == torch.float32 and sqnr_db(ref_y, y) > 25
    resnet, r = quantize(get_model("resnet10_cifar_slim"), batches((1, 3, 32, 32), n=1), progress=False)
    assert all(layer.channels_last_output for layer in r if layer.kind.startswith("Conv"))


def test_residual_add_fusion_matches_the_unfused_graph(monkeypatch):
    import edgeopt.passes.quantize as module

    torch.manual_seed(0)
    model = randomize_bn(get_model("resnet10_cifar_slim"))
    data = batches((2, 3, 32, 32))
    fused, report = quantize(model, data, weight_rounding="nearest", progress=False)
    monkeypatch.setattr(module, "FUSE_RESIDUAL_ADD", False)
    plain, plain_report = quantize(model, data, weight_rounding="nearest", progress=False)
    assert not any(r.residual_add for r in plain_report) and plain_report["layer1.0.conv2"].activation is None
    assert "layer1.0.relu" in dict(plain.named_modules())  # the shared ReLU after the add is not fusable
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        assert sqnr_db(plain(x), fused(x)) > 80  # same arithmetic, only float rounding order differs


class TwoBranches(nn.Module):
    """conv_a(x) + conv_b(x): one add claimed by one conv only; a residual of another shape is not fused."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 8, 3, padding=1)
        self.b = nn.Conv2d(4, 8, 1)
        self.c = nn.Conv2d(8, 8, 1)
        self.bias = nn.Parameter(torch.randn(8, 1, 1))

    def forward(self, x):
        y = torch.relu(self.a(x) + self.b(x))
        return self.c(y) + self.bias  # broadcast add: left alone


def test_residual_fusion_claims_each_add_once_and_needs_equal_shapes():
    model = TwoBranches().eval()
    data = batches((2, 4, 6, 6))
    qmodel, report = quantize(model, data, progress=False)
    assert [report[n].residual_add for n in "abc"] == [True, False, False]
    assert report["a"].activation == "relu"
    with torch.no_grad():
        assert sqnr_db(model(data[0]), qmodel(data[0])) > 30


def test_u8_hand_off_through_max_pools_is_exact():
    from edgeopt.nn import MaxPool2d

    torch.manual_seed(0)
    model = randomize_bn(get_model("vgg_audio_small"))  # [16, M, 32, 32, M, 64, 64, M, 128, M]
    data = batches((2, 1, 32, 32))
    u8, report = quantize(model, data, weight_rounding="nearest", progress=False)
    f32, report_f32 = quantize(model, data, weight_rounding="nearest", u8_between_layers=False, progress=False)
    links = {r.name: r.u8_output_to for r in report if r.u8_output}
    # features.0 (one input channel) stays float; 4 -> 7 and 11 -> 14 directly, 7 -> 11 and 14 -> 18 through
    # max-pools; 18 feeds the last max-pool and the average pool: float
    assert links == {"features.4": ("features.7",), "features.7": ("features.11",), "features.11": ("features.14",),
                     "features.14": ("features.18",)}
    assert not any(r.u8_output for r in report_f32) and report.u8_between_layers
    assert all(isinstance(m, MaxPool2d) for m in u8.modules() if isinstance(m, nn.MaxPool2d))
    with torch.no_grad():
        x = torch.randn(3, 1, 32, 32)
        assert torch.equal(u8(x), f32(x))


def test_a_float_stem_hands_channels_last_to_the_quantized_layers_after_it():
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                       nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3)))
    data = batches((2, 1, 8, 12))
    qmodel, report = quantize(model, data, progress=False)
    assert not report["0"].converted and report["0"].channels_last_output
    seen = {}

    def record(_module, args):
        seen["pool_input_nhwc"] = args[0].is_contiguous(memory_format=torch.channels_last)

    qmodel.get_submodule("3").register_forward_pre_hook(record)
    with torch.no_grad():
        out = qmodel(data[0])
        assert sqnr_db(model(data[0]), out) > 25
    assert seen["pool_input_nhwc"]
    assert out.is_contiguous()  # the model's output is what it was
