"""The models the study, the profiler and the benchmarks run on, with their inputs and data.

Trained subjects have a reference checkpoint and a real test split (RAVDESS speech emotion, FSDD digits,
CIFAR-10, MNIST); the 224x224 ImageNet architectures are for speed only: random init (seed 0) with
BatchNorm statistics measured on random batches, because with identity statistics the activations shrink
layer by layer until no int8 contender can represent them (MobileNetV2's logits came out ~1e-9).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgeopt.files import atomic_save


@dataclass(frozen=True)
class Subject:
    name: str
    label: str
    model: str                              # registry name
    input_shape: tuple[int, ...]            # one sample, no batch dimension
    checkpoint: str | None = None           # reference checkpoint (edgeopt reproduce NAME)
    task: str | None = None                 # edgeopt.training task with the real data
    audio_seconds: float | None = None      # seconds of audio one input covers (real-time factor)
    model_kwargs: dict = field(default_factory=dict)
    train_epochs: int = 0                   # trained by the study itself (no reference checkpoint)
    train_subset: int = 0

    @property
    def speed_only(self) -> bool:
        return self.task is None


# RAVDESS: 128 log-mel frames at a 20 ms hop; FSDD: 64 frames at 10 ms (edgeopt.training.tasks)
SUBJECTS: dict[str, Subject] = {s.name: s for s in [
    Subject("ravdess", "RAVDESS speech-emotion VGG CNN (1x64x128 log-mel)", "vgg_audio", (1, 64, 128),
            "ravdess_vgg_audio", "ravdess", audio_seconds=128 * 0.020),
    Subject("fsdd", "FSDD spoken-digit DS-CNN (1x40x64 log-mel)", "dscnn", (1, 40, 64), "fsdd_dscnn", "fsdd",
            audio_seconds=64 * 0.010),
    Subject("cifar10", "CIFAR-10 ResNet-10 slim (3x32x32)", "resnet10_cifar_slim", (3, 32, 32),
            "cifar10_resnet10_cifar_slim", "cifar10"),
    # the demo's MNIST transformer: a 2-block ViT encoder on 16 tokens of 7x7 patches
    Subject("mnist_vit", "MNIST ViT encoder (dim 192, 2 blocks, 1x28x28)", "vit_tiny", (1, 28, 28), None, "mnist",
            model_kwargs=dict(img_size=28, patch_size=7, in_chans=1, num_classes=10, depth=2),
            train_epochs=3, train_subset=20000),
    Subject("resnet18", "ResNet-18 (3x224x224, speed only)", "resnet18", (3, 224, 224)),
    Subject("mobilenet_v2", "MobileNetV2 (3x224x224, speed only)", "mobilenet_v2", (3, 224, 224)),
    Subject("resnet50", "ResNet-50 (3x224x224, speed only)", "resnet50", (3, 224, 224)),
]}
# names the benchmarks used before the study existed
ALIASES = {"vgg_audio": "ravdess", "dscnn": "fsdd", "resnet10_cifar_slim": "cifar10", "cifar_resnet": "cifar10"}
RANDOM_INIT = "random init (seed 0), BatchNorm statistics measured on 4 random-normal batches of 8"


def get_subject(name: str) -> Subject:
    name = ALIASES.get(name, name)
    if name not in SUBJECTS:
        raise ValueError(f"unknown model {name!r}; the study's models are {', '.join(SUBJECTS)} "
                         f"(also accepted: {', '.join(ALIASES)})")
    return SUBJECTS[name]


def set_bn_statistics(model: nn.Module, input_shape, batches: int = 4, batch: int = 8, seed: int = 99) -> None:
    """Gives a random-init model the activation scales of a trained one: BatchNorm statistics from data."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch, *input_shape, generator=g))
    for m in bns:
        m.momentum = 0.1
    model.eval()


def _study_cache() -> Path:
    from edgeopt.models import cache_dir

    return cache_dir() / "study"


def load_model(subject: Subject, log=print) -> tuple[nn.Module, str]:
    """(the fp32 model in eval mode, how its weights were made). Random-init weights are made once and cached
    so every process and every run sees the very same model."""
    from edgeopt.models import get_model, load_pretrained

    if subject.checkpoint:
        return load_pretrained(subject.checkpoint).eval(), f"trained checkpoint {subject.checkpoint}"
    if subject.train_epochs:
        return _trained_here(subject, log)
    torch.manual_seed(0)
    model = get_model(subject.model, **subject.model_kwargs)
    path = _study_cache() / f"random-{subject.name}.pt"
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval(), RANDOM_INIT
        except RuntimeError:  # the architecture changed since: make it again
            pass
    set_bn_statistics(model, subject.input_shape)
    _save(path, model.state_dict())
    return model.eval(), RANDOM_INIT


def _save(path: Path, obj) -> None:
    atomic_save(obj, path)


def _trained_here(subject: Subject, log) -> tuple[nn.Module, str]:
    """Subjects without a reference checkpoint (the MNIST transformer) are trained once and cached."""
    from edgeopt.models import get_model
    from edgeopt.training.loop import FitConfig, fit

    model = get_model(subject.model, **subject.model_kwargs)
    how = (f"trained here on {subject.train_subset} {subject.task} training images, {subject.train_epochs} "
           f"epochs, seed 0")
    path = _study_cache() / f"trained-{subject.name}-e{subject.train_epochs}-n{subject.train_subset}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval(), how
    log(f"{subject.name}: training the fp32 model ({how}; cached in {path})")
    train = torch.utils.data.Subset(dataset(subject, "train"), range(subject.train_subset))
    fit(model, train, None, FitConfig(epochs=subject.train_epochs, batch_size=64, lr=1e-3, seed=0, select_best=False),
        progress=False, log=lambda msg: log("  " + msg))
    _save(path, model.state_dict())
    return model.eval(), how


def dataset(subject: Subject, split: str):
    """The `split` of the subject's real data as (input, label) pairs."""
    from edgeopt.training.tasks import get_task

    if subject.task is None:
        raise ValueError(f"{subject.name} is a speed-only model: it has no dataset")
    return get_task(subject.task).dataset(split)


def calibration(subject: Subject, batches: int = 8, batch: int = 4) -> tuple[list[torch.Tensor], str]:
    """Calibration batches (evenly spaced training samples; random normal for speed-only models) and where
    they came from."""
    if subject.task is None:
        g = torch.Generator().manual_seed(1234)
        return ([torch.randn(batch, *subject.input_shape, generator=g) for _ in range(batches)],
                f"deterministic random-normal (seed 1234), {batches}x{batch}")
    train = dataset(subject, "train")
    n = batches * batch
    samples = [train[i * len(train) // n][0] for i in range(n)]
    return ([torch.stack(samples[b * batch:(b + 1) * batch]) for b in range(batches)],
            f"{n} evenly spaced {subject.task} training samples")


def example_input(subject: Subject) -> torch.Tensor:
    """The batch-1 input every timing uses: a real test sample where there is data."""
    if subject.task is None:
        return torch.randn(1, *subject.input_shape, generator=torch.Generator().manual_seed(4321))
    return dataset(subject, "test")[0][0].unsqueeze(0)
