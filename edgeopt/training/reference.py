"""The reference models other parts of edgeopt use (quantization, pruning, the demo, benchmarks).

Each recipe is one command, ``edgeopt reproduce <name>``; its result is cached, so a second call returns
at once. Small results are committed under ``edgeopt/checkpoints/`` with the command and the data
version (SHA-1 of the metadata or array files) in their metadata, so CI and benchmarks never retrain.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgeopt.models import PACKAGE_CHECKPOINTS, cache_dir, load_pretrained, pretrained_path
from edgeopt.models.checkpoint import PretrainedNotFoundError


@dataclass(frozen=True)
class Recipe:
    name: str
    task: str
    model: str
    fit: dict = field(default_factory=dict)  # FitConfig overrides on top of the task defaults
    teacher: str | None = None  # a recipe name: distil from that model instead of plain training
    temperature: float = 4.0
    alpha: float = 0.9
    # (sparsity, (block rows, block cols)): prune a copy of the teacher itself while distilling from it
    prune: tuple[float, tuple[int, int]] | None = None

    @property
    def command(self) -> str:
        return f"edgeopt reproduce {self.name}"

    @property
    def explicit_command(self) -> str:
        """The same run spelled with `edgeopt train` / `edgeopt distill` (or edgeopt.optimize's steps)."""
        if self.prune:
            sparsity, block = self.prune
            fit = ", ".join(f"{k}={v!r}" for k, v in self.fit.items())
            return (f"edgeopt.optimize(load_pretrained({self.teacher!r}), [Prune({sparsity}, block={block}), "
                    f"Distill(temperature={self.temperature}, alpha={self.alpha}), FineTune(train split, {fit})])")
        args = " ".join(f"--keep {'best-val' if v else 'last'}" if k == "select_best" else f"--{k.replace('_', '-')} {v}"
                        for k, v in self.fit.items())
        if self.teacher:
            return (f"edgeopt distill {self.task} --teacher {self.teacher} --student {self.model} "
                    f"--temperature {self.temperature} --alpha {self.alpha} {args}").strip()
        return f"edgeopt train {self.task} --model {self.model} {args}".strip()


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("ravdess_vgg_audio", "ravdess", "vgg_audio", {"seed": 0}),
    Recipe("ravdess_vgg_audio_small", "ravdess", "vgg_audio_small", {"seed": 0}),
    # alpha=0.9 with best-validation selection kept a mid-training epoch (the 120-clip validation set of
    # two actors is noisy) and reached 45.4%; this recipe weights the hard labels more and keeps the
    # last, annealed epoch
    Recipe("ravdess_vgg_audio_small_kd", "ravdess", "vgg_audio_small", {"seed": 0, "select_best": False},
           teacher="ravdess_vgg_audio", alpha=0.5),
    Recipe("fsdd_dscnn", "fsdd", "dscnn", {"seed": 0}),
    Recipe("fsdd_dscnn_small", "fsdd", "dscnn_small", {"seed": 0}),
    Recipe("fsdd_dscnn_small_kd", "fsdd", "dscnn_small", {"seed": 0}, teacher="fsdd_dscnn"),
    # dscnn_small (width 24) cannot hold 96% even with distillation, so the FSDD pair that meets the
    # "1/4 of the MACs within 2 points" goal is dscnn_large (teacher) -> dscnn (student)
    Recipe("fsdd_dscnn_large", "fsdd", "dscnn_large", {"seed": 0, "epochs": 25}),
    Recipe("fsdd_dscnn_kd", "fsdd", "dscnn", {"seed": 0}, teacher="fsdd_dscnn_large"),
    Recipe("cifar10_resnet10_cifar_slim", "cifar10", "resnet10_cifar_slim", {"seed": 0}),
    # the dense vgg_audio pruned to 80% in the 16x4 blocks the sparse int8 kernels skip, distilled from
    # itself at a fifth of the task's learning rate (the demo's optimized model, once lowered to int8)
    Recipe("ravdess_vgg_audio_s80_kd", "ravdess", "vgg_audio",
           {"seed": 0, "epochs": 12, "lr": 4e-4, "label_smoothing": 0.0}, teacher="ravdess_vgg_audio", alpha=0.9,
           prune=(0.8, (16, 4))),
]}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown reference model {name!r}; available: {', '.join(RECIPES)}")
    return RECIPES[name]


def reproduce(name: str, force: bool = False, into_package: bool = False, data_root=None, progress: bool = True,
              log=print) -> Path:
    """Train reference model `name` unless a checkpoint already exists; return the checkpoint path.

    Results go to the cache directory, or to ``edgeopt/checkpoints/`` with `into_package` (how the
    committed checkpoints were made). A distilled recipe first reproduces its teacher if needed.
    """
    from edgeopt.training.distill import distill_task, prune_distill_task
    from edgeopt.training.train import train

    recipe = get_recipe(name)
    out = (PACKAGE_CHECKPOINTS if into_package else cache_dir() / "checkpoints") / f"{name}.pt"
    if not force:
        try:
            existing = pretrained_path(name)
        except PretrainedNotFoundError:
            existing = None
        if existing is not None:
            if progress:
                log(f"{name}: using existing checkpoint {existing} (--force retrains)")
            return existing
    if recipe.teacher:
        reproduce(recipe.teacher, data_root=data_root, progress=progress, log=log, into_package=into_package)
        teacher, teacher_meta = load_pretrained(recipe.teacher, with_metadata=True)
    if recipe.prune:
        sparsity, block = recipe.prune
        resume = cache_dir() / "checkpoints" / f"{name}.fit"  # an interrupted run continues from its last epoch
        resume.parent.mkdir(parents=True, exist_ok=True)
        if force:
            resume.unlink(missing_ok=True)
        prune_distill_task(recipe.task, teacher, teacher_meta["model_name"], teacher_meta["model_kwargs"],
                           sparsity=sparsity, block=block, temperature=recipe.temperature, alpha=recipe.alpha,
                           out=out, resume=resume, data_root=data_root,
                           command=recipe.command, teacher_name=recipe.teacher, progress=progress, log=log,
                           **recipe.fit)
    elif recipe.teacher:
        distill_task(recipe.task, teacher, recipe.model, temperature=recipe.temperature, alpha=recipe.alpha,
                     out=out, data_root=data_root, command=recipe.command, teacher_name=recipe.teacher,
                     progress=progress, log=log, **recipe.fit)
    else:
        train(recipe.task, recipe.model, out=out, data_root=data_root, command=recipe.command,
              progress=progress, log=log, **recipe.fit)
    return out
