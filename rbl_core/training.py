"""The suite's one training loop (``fit``) and optimiser factory; on them, classifier training (ERM, PGD-AT, a loss)."""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from tqdm.auto import tqdm

from rbl_core.data import DataSplit
from rbl_core.device import module_device
from rbl_core.reproducibility import PINNED_ISA, kernels_pinned
from rbl_core.threat import Norm, ThreatModel

# (model, x, y, step, total_steps) -> loss: a training objective with its own schedule (e.g. certified training)
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, int, int], torch.Tensor]
Batch = TypeVar("Batch")
Loss = torch.Tensor | Sequence[torch.Tensor]   # what a step of fit() minimises: one loss, or one per model


@contextmanager
def deterministic_training() -> Iterator[None]:
    """Run the body with one intra-op thread and deterministic algorithms, then restore the caller's settings.

    The thread count changes how CPU kernels (convolutions, matmuls, reductions) split their sums,
    so the same seed gave different float rounding, hence different weights, with 1 thread (the ``rbl``
    CLI) and with 2 (the Python default). One thread makes a recipe mean one set of weights.
    Interop threads are left alone: ``torch.set_num_interop_threads`` may be called only once per
    process before any parallel work and raises afterwards; the training loops do not use them.
    oneDNN is off for the body: its convolutions may choose their blocking from the CPU's cache sizes, so even the
    pinned instruction set (rbl_core/reproducibility.py) would not fix their summation order across machines;
    ATen's own convolution (im2col and MKL's reproducible GEMM) does.
    """
    if not kernels_pinned():
        warnings.warn(f"torch's CPU kernels are not pinned to {PINNED_ISA} (torch ran before rbl_core was imported, or "
                      f"ATEN_CPU_CAPABILITY names another set): these weights are this machine's, not the recipe's. "
                      f"Import rbl_core (or any robustbench-local package) before running torch code.",
                      RuntimeWarning, stacklevel=3)
    if torch.cuda.is_available():
        # cuBLAS is deterministic only with a fixed workspace; strict mode refuses CUDA matmuls without it.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    # Every op of the training loops (ERM, PGD-AT, augmentation, DVERGE distillation) has a
    # deterministic CPU kernel, so the strict mode is on: a future op without one fails loudly. Some CUDA
    # kernels (adaptive pooling's backward) have no deterministic version; where CUDA exists they warn
    # instead, and a GPU-trained model is the GPU's (its row records the device), not the recipe's.
    torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
    onednn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False   # not mkldnn.flags(): it also sets TF32 and warns on every use
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = onednn
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(threads)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Top-1 labels of ``model`` on ``x``, computed in batches without gradients on the model's device.

    Each batch goes to the model's device and its labels come back to ``x``'s, so the data set stays where it is.
    """
    device = module_device(model)
    return torch.cat([model(chunk.to(device)).argmax(dim=1).to(x.device) for chunk in x.split(batch_size)])


def accuracy(model: nn.Module, data: DataSplit, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``data`` in eval mode, restoring the previous mode."""
    was_training = model.training
    model.eval()
    correct = int((predict(model, data.x, batch_size) == data.y).sum())
    model.train(was_training)
    return correct / max(len(data), 1)


def pgd_perturb(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, steps: int = 7,
                step_size: float | None = None, random_start: bool = True,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted PGD on the cross-entropy loss, used to craft training-time adversarial examples."""
    eps = float(threat.eps or 0.0)
    if eps == 0 or steps <= 0:
        return x.detach()
    step = step_size if step_size is not None else 2.5 * eps / steps
    x_adv = x.detach().clone()
    if random_start:
        # Drawn on the CPU (the generator's device) and moved: the same seed gives the same noise on any device.
        noise = (torch.rand(x.shape, generator=generator) * 2 - 1).to(x.device)
        if threat.norm == Norm.L2:
            noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) * eps * 0.5
        else:
            noise = noise * eps
        x_adv = threat.project(x, x_adv + noise)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            if threat.norm == Norm.Linf:
                x_adv = x_adv + step * grad.sign()
            else:
                g = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.ndim - 1)))
                x_adv = x_adv + step * grad / g
            x_adv = threat.project(x, x_adv)
    return x_adv.detach()


def augment_batch(x: torch.Tensor, generator: torch.Generator, flip: bool) -> torch.Tensor:
    """Random shifts by up to 1/8 of the side (zero padding) and, for natural images, horizontal flips."""
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h))  # (n, h)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w))  # (n, w)
    out = padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(x.shape[1]).view(1, -1, 1, 1),
                 rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        out[mask] = out[mask].flip(-1)
    return out


def make_optimizer(params: Iterable, name: str = "adam", *, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                   nesterov: bool = False, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """The suite's one optimiser factory: Adam or SGD with momentum over tensors or parameter groups."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: choose adam or sgd")


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Callable[[int], Iterable[Batch]],
        loss_fn: Callable[[Batch, int], Loss], *, epochs: Iterable[int], schedule: LRScheduler | None = None,
        on_step: Callable[[Batch, Loss], None] | None = None,
        on_epoch_end: Callable[[int, Loss | None], None] | None = None) -> None:
    """The suite's one training loop: per epoch, an optimiser step on ``loss_fn(batch, step)`` per ``batches(epoch)``.

    ``epochs``: ``range(n)`` or a progress bar over it. ``loss_fn`` may return one loss per sub-model of ``model``
    (one optimiser; one backward pass gives each its own gradient). ``schedule`` steps after every optimiser step,
    epoch schedules in ``on_epoch_end``. Under :func:`deterministic_training`; ``model`` is in eval mode after.
    """
    step, loss = 0, None
    with deterministic_training():
        for epoch in epochs:
            model.train()
            for batch in batches(epoch):
                loss = loss_fn(batch, step)
                optimizer.zero_grad(set_to_none=True)
                torch.autograd.backward(loss)
                optimizer.step()
                if schedule is not None:
                    schedule.step()
                if on_step is not None:
                    on_step(batch, loss)
                step += 1
            if on_epoch_end is not None:
                on_epoch_end(epoch, loss)
    model.eval()


def train_classifier(model: nn.Module, train: DataSplit, *, epochs: int, lr: float, batch_size: int, seed: int,
                     adversarial: str | None = None, eps: float = 0.0, steps: int = 7, optimizer: str = "adam",
                     schedule: str = "onecycle", weight_decay: float = 0.0, augment: bool = False,
                     progress: bool = True, loss_fn: LossFn | None = None) -> nn.Module:
    """Train ``model`` by ERM, by PGD adversarial training when ``adversarial`` is "Linf" or "L2", or on ``loss_fn``."""
    if loss_fn is not None and adversarial:
        raise ValueError("give either adversarial (PGD training) or loss_fn, not both")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    threat = ThreatModel(Norm(adversarial), eps) if adversarial else None
    opt = make_optimizer(model.parameters(), optimizer, lr=lr, weight_decay=weight_decay, nesterov=True)
    total = epochs * -(-len(train) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total) if schedule == "onecycle" else None

    device = module_device(model)

    def loss(batch: tuple[torch.Tensor, torch.Tensor], step: int) -> torch.Tensor:
        x, y = batch
        if augment:   # on the CPU, where the generator is, before the batch moves to the model's device
            x = augment_batch(x, gen, flip=x.shape[1] == 3)
        x, y = x.to(device), y.to(device)
        if threat is not None:
            # Craft in eval mode so BatchNorm statistics are not updated by adversarial batches.
            model.eval()
            x = pgd_perturb(model, x, y, threat, steps=steps, generator=gen)
            model.train()
        return F.cross_entropy(model(x), y) if loss_fn is None else loss_fn(model, x, y, step, total)

    bar = tqdm(range(epochs), desc=f"train {train.name}", disable=None if progress else True, leave=False)  # None: off when not a terminal
    fit(model, opt, lambda epoch: train.loader(batch_size, shuffle=True, seed=seed * 1000 + epoch), loss, epochs=bar,
        schedule=sched, on_epoch_end=lambda _, last: bar.set_postfix(loss=last.item()))
    return model
