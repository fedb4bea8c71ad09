"""edgeopt.optimize: the one-shot form as written, step order, refused combinations with their reasons,
fine-tuning with pruning schedules and distillation, low rank + int8, the accuracy-aware back-off, the
one report."""
import pytest
import torch
from torch import nn

import edgeopt
from edgeopt.nn import LowRankLinear, SparseConv2d
from edgeopt.optimize import Distill, FineTune, LowRank, Prune, PruneChannels, Quantize, optimize, plan_steps
from edgeopt.passes.report import Report


def cnn(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 10))
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def batches(n=2, shape=(4, 3, 12, 12), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


def test_the_one_shot_form_works_as_written():
    model = cnn()
    data = batches()
    lowered, report = edgeopt.optimize(model, [edgeopt.Prune(0.8, block=(16, 4), min_weights=1024),
                                               edgeopt.Quantize(measure=False)], data=data)
    assert isinstance(report, Report) and isinstance(lowered, torch.fx.GraphModule)
    assert any(isinstance(m, SparseConv2d) for m in lowered.modules())
    for name in ("3", "7"):  # pruned convs: one row each, with every step's entry
        row = report[name]
        assert any(a.startswith("pruned") for a in row.applied) and any(a.startswith("int8") for a in row.applied)
        assert row.kernel == "sparse int8" and row.macs < row.macs_before and row.sqnr_db is not None
        assert row.weight_bytes < row.weight_bytes_before
    assert report.macs_after < report.macs_before and report.size_bytes_after < report.size_bytes_before
    assert report.latency_ms_before > 0 and report.latency_ms_after > 0
    assert 0.7 < report.sparsity < 0.9
    text = str(report)
    assert "Prune(" in text and "lower (int8)" in text and "BatchNorm statistics re-estimated" in text
    with torch.no_grad():
        assert lowered(data[0]).shape == (4, 10)
    assert type(model[3]) is nn.Conv2d and not (model[3].weight == 0).any()  # the model passed in is untouched


def test_step_order_does_not_change_the_result():
    data = batches()
    a, ra = optimize(cnn(), [Prune(0.7, min_weights=1024), Quantize(measure=False)], data=data, measure=False)
    b, rb = optimize(cnn(), [Quantize(measure=False), Prune(0.7, min_weights=1024)], data=data, measure=False)
    assert [r.kernel for r in ra] == [r.kernel for r in rb]
    with torch.no_grad():
        assert torch.equal(a(data[1]), b(data[1]))
    assert "applied as Prune -> Quantize" in " ".join(rb.notes) and not ra.notes[1:]
    assert [type(s).__name__ for s in plan_steps([Quantize(), FineTune(None), Prune(0.5), LowRank(rank=0.5),
                                                  PruneChannels(0.5), Distill()])] == \
        ["PruneChannels", "LowRank", "Prune", "Distill", "FineTune", "Quantize"]


def test_impossible_combinations_are_refused_with_the_reason():
    data = batches(1)
    with pytest.raises(ValueError, match="Prune is given twice"):
        optimize(cnn(), [Prune(0.5), Prune(0.8)], data=data)
    with pytest.raises(ValueError, match="Distill needs a FineTune"):
        optimize(cnn(), [Distill(), Quantize()], data=data)
    with pytest.raises(ValueError, match="Quantize needs data"):
        optimize(cnn(), [Quantize()])
    with pytest.raises(ValueError, match="max_accuracy_drop needs eval_fn"):
        optimize(cnn(), [Quantize()], data=data, max_accuracy_drop=1.0)
    with pytest.raises(ValueError, match="needs a Quantize step"):
        optimize(cnn(), [Prune(0.5)], data=data, max_accuracy_drop=1.0, eval_fn=lambda m: 50.0)
    with pytest.raises(ValueError, match="exactly one of rank"):
        optimize(cnn(), [LowRank(rank=0.5, energy=0.9)], data=data)
    with pytest.raises(TypeError, match="step configs"):
        optimize(cnn(), [edgeopt.quantize], data=data)
    with pytest.raises(ValueError, match="eval_fn or eval_data, not both"):
        optimize(cnn(), [Quantize()], data=data, eval_fn=lambda m: 1.0, eval_data=[])
    # the standalone passes say the same instead of finding nothing to do
    lowered, _ = edgeopt.quantize(cnn(), data, progress=False, measure=False)
    with pytest.raises(ValueError, match="already lowered"):
        edgeopt.prune(lowered, 0.5)
    with pytest.raises(ValueError, match="already lowered"):
        edgeopt.low_rank(lowered, rank=0.5)


def toy_task(n=256, seed=0):
    """Labels from a fixed random teacher, so the task is learnable from the inputs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 12, 12, generator=g)
    with torch.no_grad():
        y = cnn(seed=7)(x).argmax(1)
    return torch.utils.data.TensorDataset(x, y)


def test_fine_tuning_with_a_pruning_schedule_and_distillation():
    train, val = toy_task(96, 0), toy_task(32, 1)
    lowered, report = optimize(cnn(), [Quantize(measure=False), Distill(temperature=2.0),
                                       FineTune(train, epochs=2, val_data=val, batch_size=32, lr=1e-3,
                                                progress=False),
                                       Prune(0.75, min_weights=1024, ramp=0.5)], data=[train.tensors[0][:32]],
                               eval_data=val, measure=False)
    assert any(p.startswith("distillation: 2 epochs") for p in report.passes)
    assert 0.7 < report.sparsity < 0.8
    assert report["3"].kernel == "sparse int8" and report.accuracy_before is not None
    assert report.accuracy_after is not None and report.accuracy_after == pytest.approx(
        100.0 * float((lowered(val.tensors[0]).argmax(1) == val.tensors[1]).float().mean()))


def test_a_fine_tune_in_segments_stops_before_lowering_and_resumes(tmp_path):
    train = toy_task(96, 0)
    steps = lambda: [Prune(0.5, min_weights=1024), Quantize(measure=False),  # noqa: E731
                     FineTune(train, epochs=2, batch_size=32, checkpoint=tmp_path / "ft.pt", max_epochs=1,
                              progress=False)]
    first, report = optimize(cnn(), steps(), data=[train.tensors[0][:16]], measure=False)
    assert not isinstance(first, torch.fx.GraphModule) and "call optimize again" in " ".join(report.notes)
    lowered, report = optimize(cnn(), steps(), data=[train.tensors[0][:16]], measure=False)
    assert isinstance(lowered, torch.fx.GraphModule) and report["3"].kernel.endswith("int8")


def test_low_rank_and_int8_compose_with_static_ranges():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    with torch.no_grad():  # rank-16 weights: a factorization loses nothing
        for i in (0, 2):
            model[i].weight.copy_(torch.randn(256, 16) @ torch.randn(16, 256) / 16)
    data = [torch.randn(8, 256) for _ in range(2)]
    lowered, report = optimize(model, [Quantize(measure=False), LowRank(rank=16, measure=False)], data=data)
    assert report["0"].kernel == "low-rank int8" and report["2"].kernel == "low-rank int8"
    assert any(a.startswith("low rank r=16") for a in report["0"].applied)
    assert report["0"].macs == 16 * 512 and report["0"].macs_before == 256 * 256
    stages = lowered.get_submodule("0")
    assert [m.mode for m in stages] == ["static", "static"]  # int8 factors, calibrated ranges at both stages
    with torch.no_grad():
        ref, out = model(data[0]), lowered(data[0])
    assert report.model_sqnr_db > 25
    torch.testing.assert_close(out, ref, rtol=0, atol=0.1 * float(ref.abs().max()))
    assert not any(isinstance(m, LowRankLinear) for m in lowered.modules())


def test_accuracy_aware_mode_backs_off_until_within_the_budget():
    model = cnn()
    eval_x = torch.randn(32, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(eval_x)

    def fidelity(m):  # "accuracy" in points: 100 minus the output's relative error in percent
        with torch.no_grad():
            return 100.0 * (1.0 - float((m(eval_x) - ref).norm() / ref.norm()))

    # one-shot 90% pruning costs far more than 3 points; backing pruned layers off to their weights from
    # before the pruning (and int8 layers to float) is what wins them back
    lowered, report = optimize(model, [Prune(0.9, min_weights=1024), Quantize(weight_rounding="nearest")],
                               data=batches(), eval_fn=fidelity, max_accuracy_drop=3.0, progress=False)
    assert report.accuracy_before == pytest.approx(100.0)
    assert report.backed_off, str(report)
    last = {}
    for b in report.backed_off:  # a layer may back off again in a later round, from where it was left
        assert b.accuracy_gain > 0 and b.to_kernel != b.from_kernel
        assert b.from_kernel == last.get(b.layer, b.from_kernel)
        last[b.layer] = b.to_kernel
    assert all(report[name].kernel == kernel for name, kernel in last.items())
    assert [b.accuracy_after for b in report.backed_off] == sorted(b.accuracy_after for b in report.backed_off)
    assert any(b.to_kernel.endswith("(original)") for b in report.backed_off)
    assert report.accuracy_after == pytest.approx(fidelity(lowered))
    assert report.accuracy_after >= 97.0 or "budget not met" in " ".join(report.notes)
    assert "backed off" in str(report)
