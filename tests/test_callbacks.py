"""edgeopt.training.fit callbacks: a pruning schedule and distillation without hand-written loss
functions, 'best epoch' only once the schedule is done, resumable segments equal to one whole run."""
import pytest
import torch
from torch import nn

import edgeopt
from edgeopt.training import FitConfig, fit, kd_loss
from edgeopt.training.callbacks import Callback, Distillation


def task(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    y = (x[:, :4].sum(1) > 0).long() + 2 * (x[:, 4:8].sum(1) > 0).long()
    return torch.utils.data.TensorDataset(x, y)


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


def test_pruner_as_callback_reaches_its_target_over_the_ramp():
    model = mlp()
    pruner = edgeopt.prune(model, 0.75, block=(16, 4), min_weights=1024, ramp=0.5)
    seen = []

    class Watch(Callback):
        def on_step_end(self, state):
            seen.append((state.step, pruner.current))

    config = FitConfig(epochs=4, batch_size=32, lr=1e-2, select_best=True)
    history = fit(model, task(), task(64, 1), config, callbacks=[pruner, Watch()], progress=False)
    assert pruner.steps == 8  # half of 4 epochs x 4 steps
    sparsities = [s for _, s in seen]
    assert sparsities == sorted(sparsities) and sparsities[-1] == pytest.approx(0.75)
    assert 0 < sparsities[2] < 0.75
    assert history.best_epoch >= 2  # epochs before the target sparsity are no candidates
    for name, m in pruner.layers.items():
        assert (m.weight[~pruner.masks[name]] == 0).all()


def test_distillation_callback_is_the_kd_loss():
    teacher, student = mlp(1).eval(), mlp(2)
    data = task(64)
    losses = []

    class Record(Callback):
        def loss(self, state, x, y, logits, loss):
            with torch.no_grad():
                losses.append((float(loss), float(kd_loss(logits, teacher(x), y, 3.0, 0.8))))
            return loss

    fit(student, data, None, FitConfig(epochs=1, batch_size=32), callbacks=[Distillation(teacher, 3.0, 0.8), Record()],
        progress=False)
    assert len(losses) == 2 and all(a == pytest.approx(b) for a, b in losses)
    with pytest.raises(ValueError, match="not both"):
        fit(mlp(), data, None, FitConfig(epochs=1), loss_fn=lambda m, x, y: m(x).sum(),
            callbacks=[Distillation(teacher)], progress=False)


def test_segments_resume_to_the_same_model_as_one_run(tmp_path):
    config = FitConfig(epochs=3, batch_size=32, lr=5e-3, seed=3)
    whole = mlp()
    pruner = edgeopt.prune(whole, 0.5, block=(16, 4), min_weights=1024, ramp=0.6)
    fit(whole, task(), task(64, 1), config, callbacks=[pruner], progress=False)

    ckpt = tmp_path / "fit.pt"
    parts = []
    for _ in range(3):
        model = mlp()
        pruner = edgeopt.prune(model, 0.5, block=(16, 4), min_weights=1024, ramp=0.6)
        history = fit(model, task(), task(64, 1), config, callbacks=[pruner], progress=False, checkpoint=ckpt,
                      max_epochs=1)
        parts.append(history.finished)
    assert parts == [False, False, True] and len(history.epochs) == 3
    for a, b in zip(whole.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
