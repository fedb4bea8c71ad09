"""Training loop, evaluation, task features, CLI and the committed reference checkpoints (tiny runs only)."""
import argparse
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from edgeopt.cli_args import UsageError
from edgeopt.data.paths import DEFAULT_DATA_ROOT
from edgeopt.models import PACKAGE_CHECKPOINTS, load_checkpoint, load_pretrained
from edgeopt.training import FitConfig, evaluate, fit, get_task, train
from edgeopt.training.cli import register
from edgeopt.training.reference import RECIPES
from edgeopt.training.tasks import trim_silence

needs_data = pytest.mark.skipif(not DEFAULT_DATA_ROOT.is_dir(), reason="shared data not beside the repository")


class FixedPredictions(nn.Module):
    def __init__(self, predictions):
        super().__init__()
        self.predictions = torch.tensor(predictions)
        self.calls = 0

    def forward(self, x):
        out = nn.functional.one_hot(self.predictions[self.calls : self.calls + len(x)], 3).float()
        self.calls += len(x)
        return out


def test_evaluate_confusion_and_recall():
    targets = torch.tensor([0, 0, 0, 1, 1, 2])
    data = TensorDataset(torch.zeros(6, 1), targets)
    report = evaluate(FixedPredictions([0, 1, 0, 1, 1, 0]), data, ["a", "b", "c"], batch_size=4)
    assert report.accuracy == pytest.approx(4 / 6)
    np.testing.assert_array_equal(report.confusion, [[2, 1, 0], [0, 2, 0], [1, 0, 0]])
    np.testing.assert_allclose(report.per_class_recall, [2 / 3, 1.0, 0.0])
    text = report.format()
    assert "66.67%" in text and "confusion matrix" in text and "per-class recall" in text
    assert json.loads(json.dumps(report.to_dict()))["per_class_recall"]["b"] == 1.0


def _synthetic(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(dim=1)  # linearly separable
    data = TensorDataset(x, y)
    data.classes = ("a", "b", "c")
    return data


def test_fit_learns_and_is_reproducible():
    data = _synthetic()
    config = FitConfig(epochs=8, batch_size=32, lr=2e-2, seed=3)
    models = []
    for _ in range(2):
        torch.manual_seed(config.seed)
        model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
        history = fit(model, data, data, config, progress=False)
        models.append(model)
    assert history.epochs[-1]["train_loss"] < 0.6 * history.epochs[0]["train_loss"]
    assert evaluate(models[0], data).accuracy > 0.9
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)  # same seed, same weights, bit for bit


def test_trim_silence_keeps_the_loud_part():
    logmel = torch.full((4, 10), -20.0)
    logmel[:, 3:7] = 0.0
    logmel[:, 2] = -3.0  # 13 dB down: kept at a 40 dB threshold
    assert trim_silence(logmel, 40.0).shape == (4, 5)


@needs_data
def test_audio_task_windows():
    task = get_task("ravdess")
    test = task.dataset("test")
    x, y = test[0]
    assert x.shape == (1, 64, 128) == task.input_shape and 0 <= y < 8
    assert torch.equal(test[0][0], x)  # evaluation windows are deterministic
    train_set = task.dataset("test", augment=True)  # the augmented view; the test split is smaller
    assert not torch.equal(train_set[0][0], train_set[0][0])  # augmentation is random
    assert abs(float(torch.stack([test[i][0] for i in range(0, 240, 8)]).mean())) < 0.5  # normalised
    assert set(task.data_version()) == {"ravdess/metadata.csv"}


@needs_data
def test_train_a_few_steps_saves_a_checkpoint_that_reloads(tmp_path):
    result = train("fsdd", "dscnn_small", epochs=2, batch_size=32, train_limit=256, out=tmp_path / "m.pt",
                   progress=False)
    model, meta = load_checkpoint(result.checkpoint)
    assert meta["task"] == "fsdd" and meta["fit_config"]["epochs"] == 2 and len(meta["history"]) == 2
    assert meta["data_version"]["fsdd/metadata.csv"] and meta["macs"] > 0
    assert meta["test_accuracy"] == pytest.approx(result.test.accuracy)
    again = evaluate(model, get_task("fsdd").dataset("test"))
    assert again.accuracy == pytest.approx(result.test.accuracy)
    assert meta["history"][1]["train_loss"] < meta["history"][0]["train_loss"]



@needs_data
def test_prune_distill_task_prunes_whole_blocks_and_records_how(tmp_path):
    from edgeopt.training.distill import prune_distill_task

    teacher, teacher_meta = load_pretrained("fsdd_dscnn", with_metadata=True)
    teacher_weights = {k: v.clone() for k, v in teacher.state_dict().items()}
    result = prune_distill_task("fsdd", teacher, teacher_meta["model_name"], teacher_meta["model_kwargs"],
                                sparsity=0.5, block=(16, 4), epochs=1, batch_size=32, train_limit=64,
                                out=tmp_path / "p.pt", resume=tmp_path / "p.fit", command="test", progress=False)
    assert all(torch.equal(teacher_weights[k], v) for k, v in teacher.state_dict().items())  # a copy was pruned
    model, meta = load_checkpoint(result.checkpoint)
    assert meta["pruning"]["sparsity"] == 0.5 and meta["pruning"]["block"] == [16, 4]
    assert meta["distillation"]["alpha"] == 0.9 and len(meta["history"]) == 1 and meta["command"] == "test"
    zero_blocks = total_blocks = 0
    for name, w in model.state_dict().items():
        if name.endswith("pointwise.weight"):  # the layers big enough to prune (64 x 64)
            blocks = w.reshape(4, 16, 16, 4).abs().sum((1, 3))  # (out / 16, in / 4) block sums
            zero_blocks += int((blocks == 0).sum())
            total_blocks += blocks.numel()
            assert int((w == 0).sum()) == 64 * int((blocks == 0).sum())  # zeros only as whole 16x4 blocks
    assert zero_blocks == total_blocks // 2 and meta["pruning"]["weight_sparsity"] == pytest.approx(0.5)
    assert evaluate(model, get_task("fsdd").dataset("test")).accuracy == pytest.approx(meta["test_accuracy"])


def _run_cli(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.run(args)


@needs_data
def test_cli_train_eval_distill(tmp_path, capsys):
    teacher = tmp_path / "t.pt"
    assert _run_cli(["train", "fsdd", "--model", "dscnn_small", "--model-arg", "width=16", "--epochs", "1",
                     "--limit", "128", "--batch-size", "32", "--out", str(teacher), "--threads", "1"]) == 0
    assert load_checkpoint(teacher)[1]["model_kwargs"]["width"] == 16
    assert _run_cli(["eval", "--model", str(teacher), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "confusion matrix" in out and "per-class recall" in out
    student = tmp_path / "s.pt"
    assert _run_cli(["distill", "fsdd", "--teacher", str(teacher), "--student", "dscnn_small", "--model-arg",
                     "width=8", "--epochs", "1", "--limit", "128", "--batch-size", "32", "--out", str(student),
                     "--threads", "1"]) == 0
    meta = load_checkpoint(student)[1]
    assert meta["distillation"]["teacher"] == str(teacher) and meta["command"].startswith("edgeopt")
    with pytest.raises(UsageError, match="trained on 'fsdd'"):  # edgeopt.cli.main prints it, exit status 2
        _run_cli(["eval", "ravdess", "--model", str(teacher)])
    assert _run_cli(["reproduce", "--list"]) == 0
    assert "ravdess_vgg_audio" in capsys.readouterr().out


COMMITTED = sorted(p.stem for p in PACKAGE_CHECKPOINTS.glob("*.pt"))


@needs_data
@pytest.mark.parametrize("name", COMMITTED)
def test_committed_checkpoints_reproduce_their_recorded_accuracy(name):
    model, meta = load_pretrained(name, with_metadata=True)
    assert meta["command"] == RECIPES[name].command
    task = get_task(meta["task"])
    assert meta["data_version"] == task.data_version()  # the data has not changed under the checkpoint
    assert evaluate(model, task.dataset("test")).accuracy == pytest.approx(meta["test_accuracy"], abs=1e-9)


def test_committed_checkpoints_stay_small():
    total = sum(p.stat().st_size for p in PACKAGE_CHECKPOINTS.glob("*.pt"))
    assert total < 20 * 2**20
