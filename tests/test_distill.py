"""Knowledge distillation: the loss and that a student actually learns from a teacher."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from edgeopt.training import FitConfig, distill, kd_loss


def test_kd_loss_limits_and_scale():
    torch.manual_seed(0)
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.randint(0, 4, (5,))
    assert kd_loss(s, t, y, 2.0, 0.0) == pytest.approx(float(F.cross_entropy(s, y)))
    assert kd_loss(t, t, y, 3.0, 1.0) == pytest.approx(0.0, abs=1e-6)
    p, q = F.softmax(t / 2, 1), F.softmax(s / 2, 1)
    manual = (p * (p.log() - q.log())).sum(1).mean() * 4
    assert kd_loss(s, t, y, 2.0, 1.0) == pytest.approx(float(manual), rel=1e-5)
    with pytest.raises(ValueError):
        kd_loss(s, t, y, 0.0, 0.5)


def test_distill_pulls_the_student_towards_the_teacher():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 5))
    x = torch.randn(512, 6)
    # hard labels that disagree with the teacher: with alpha=1 the student must follow the teacher anyway
    data = TensorDataset(x, torch.zeros(512, dtype=torch.long))
    student = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 5))

    def agreement():
        with torch.no_grad():
            return float((student(x).argmax(1) == teacher(x).argmax(1)).float().mean())

    before = agreement()
    history = distill(teacher, student, data, temperature=2.0, alpha=1.0, config=FitConfig(epochs=20, batch_size=64, lr=2e-2),
                      progress=False)
    assert agreement() > max(0.8, before + 0.3)
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    assert all(not p.requires_grad for p in teacher.parameters())  # the teacher stays frozen
