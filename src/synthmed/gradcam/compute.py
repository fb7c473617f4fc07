"""Grad-CAM's computation: hooks, maps and per-pair numbers for a batch (tensors in, maps out).

:func:`cam_session` wraps a pytorch-grad-cam method so that nothing leaks into the model;
:func:`build_panels` turns a pool of real images and a generator into per-class panels and
per-pair records.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from synthmed.errors import SynthmedError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from synthmed.gradcam.figures import ClassPanel
    from synthmed.data.base import ImageSet
    from synthmed.generators.base import Generator
    from synthmed.generators.cache import GenerationCache
    from synthmed.models.base import ModelFactory

# --method name → pytorch_grad_cam class
METHODS: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "scorecam": "ScoreCAM",
    "xgradcam": "XGradCAM",
    "eigencam": "EigenCAM",
    "layercam": "LayerCAM",
}

__all__ = ["METHODS", "build_panels", "cam_session", "target_layers"]


# --- maps ------------------------------------------------------------------------------------------
@contextmanager
def cam_session(
    model: nn.Module,
    layers: list[nn.Module],
    *,
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    method: str = "gradcam",
) -> Iterator[Callable[[torch.Tensor, Sequence[int]], tuple[np.ndarray, torch.Tensor]]]:
    """Hook ``layers``; yield ``maps(inputs, targets) -> (cams, logits)``.

    ``cams`` is ``(B, H, W)`` float32 in ``[0, 1]`` (one map per input, for its target class),
    ``logits`` the ``(B, C)`` output of the same forward pass, detached.

    While open, the model is in eval mode and its weights do not require gradients: with one
    target layer, its output is made a fresh leaf that requires grad, so the backward pass runs
    from the logits to that layer only (with several, gradients flow from the input). Either
    way no weight ``.grad`` is written. On exit, even by an exception (which propagates), every
    hook is removed and the train/eval mode, ``requires_grad`` flags and ``.grad`` tensors are
    restored.
    """
    import pytorch_grad_cam
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if method not in METHODS:
        raise SynthmedError(f"unknown Grad-CAM method {method!r} — choose one of {', '.join(METHODS)}")

    def leaf(module: nn.Module, args: Any, output: Any) -> Any:
        if torch.is_grad_enabled() and isinstance(output, torch.Tensor):
            return output.detach().requires_grad_().clone()  # clone: later in-place ops stay legal
        return None

    params = list(model.parameters())
    saved = [(p.requires_grad, p.grad) for p in params]
    was_training = model.training
    cut, cam = [], None
    try:
        for p in params:
            p.requires_grad_(False)
        if len(layers) == 1:  # runs before pytorch-grad-cam's own hooks, which then see the leaf
            cut.append(layers[0].register_forward_hook(leaf, prepend=True))
        cam = getattr(pytorch_grad_cam, METHODS[method])(model, layers, reshape_transform=reshape_transform)
        cam.compute_input_gradient = len(layers) > 1

        def maps(inputs: torch.Tensor, targets: Sequence[int]) -> tuple[np.ndarray, torch.Tensor]:
            with torch.enable_grad():
                cams = cam(inputs.detach().clone(), [ClassifierOutputTarget(int(t)) for t in targets])
            return cams, cam.outputs.detach()

        yield maps
    finally:
        if cam is not None:
            cam.activations_and_grads.release()  # never `with cam:` — its __exit__ swallows errors
        for handle in cut:
            handle.remove()
        for p, (requires_grad, grad) in zip(params, saved):
            p.requires_grad_(requires_grad)
            p.grad = grad
        model.train(was_training)


def target_layers(model: nn.Module, factory: ModelFactory | None, target_layer: str | None = None) -> list[nn.Module]:
    """The layers to hook: ``target_layer`` (dotted path(s), comma-separated) or the factory's choice."""
    from synthmed.models.base import ModelFactory

    if target_layer:
        layers = []
        for path in (p.strip() for p in target_layer.split(",") if p.strip()):
            try:
                layers.append(model.get_submodule(path))
            except AttributeError:
                names = [n for n, _ in model.named_modules() if n][-8:]
                raise SynthmedError(
                    f"target layer {path!r} is not a module of the model — pass a dotted path such as "
                    f"{', '.join(names)} (all: [n for n, _ in model.named_modules()])"
                ) from None
        return layers
    if factory is None or type(factory).gradcam_target_layers is ModelFactory.gradcam_target_layers:
        name = getattr(factory, "name", "?")
        raise SynthmedError(f"model {name!r} declares no Grad-CAM target layer — pass --target-layer DOTTED.PATH")
    return factory.gradcam_target_layers(model)


# --- the panel -------------------------------------------------------------------------------------
def _pick(pool: ImageSet, classes: tuple[str, ...], names: Sequence[str], pairs: int, seed: int) -> list[Any]:
    """``pairs`` rows of ``pool`` per class (seeded, without replacement)."""
    import torch

    rng = torch.Generator().manual_seed(seed)
    picked = []
    for name in names:
        rows = (pool.labels == classes.index(name)).nonzero().flatten()
        picked.append(rows[torch.randperm(len(rows), generator=rng)[:pairs]])
    return picked


def _variations(generator: Generator, pool: ImageSet, rows: torch.Tensor, *, cache: GenerationCache,
                quiet: bool, salt: str | None = None) -> dict[int, torch.Tensor | None]:
    """Variation 0 of each source row, through the generation cache (``None`` where refused).

    With the run's ``salt`` these are the cache entries the synthetic policy reads for variation 0
    of these sources (whether the run's plan used variation 0 of a source depends on the plan),
    and a paid generator is never paid twice for them.
    """
    from synthmed.generators.cache import fill

    result = fill(cache, generator, pool.images[rows], pool.labels[rows], [(i, 0) for i in range(len(rows))],
                  quiet=quiet, salt=salt)
    return {int(r): image for r, image in zip(rows, result.images)}


def build_panels(
    model: nn.Module,
    layers: list[nn.Module],
    *,
    pool: ImageSet,
    classes: tuple[str, ...],
    names: Sequence[str],
    pairs: int,
    generator: Generator,
    cache: GenerationCache,
    seed: int,
    device: str,
    method: str = "gradcam",
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    quiet: bool = True,
    display: Sequence[str] | None = None,
    salt: str | None = None,
) -> tuple[list[ClassPanel], list[dict[str, Any]]]:
    """Pick pairs, generate variations, compute probabilities, maps and per-pair metrics.

    Args:
        model: the classifier (its mode, flags and grads are restored afterwards).
        layers: Grad-CAM target layers of ``model``.
        pool: where the real sources come from.
        classes: all class names of the dataset.
        names: the true classes to show.
        pairs: sources per class (fewer when ``pool`` has fewer).
        generator: makes the synthetic variation of each source.
        cache: generation cache the variations come from and go to.
        seed: seeds the choice of sources and the ROAD imputation noise.
        device: where the model is.
        method: a key of :data:`METHODS`.
        reshape_transform: token sequence → map, for transformers.
        quiet: no generation progress bar.
        display: the class names figures show (the dataset's short names; default ``classes``).
        salt: the run's generation salt (per-simulation generations), so variations match its cache.

    Returns:
        One :class:`ClassPanel` per class in ``names`` and one record per pair (the numbers
        :func:`synthmed.gradcam.metrics.summarize` averages). A pair whose variation the
        generator refused is dropped.
    """
    import torch

    from synthmed.evaluation import to_input

    picked, synthetic = _pairs(pool, classes, names, pairs, seed, generator, cache, quiet, salt)
    rows = torch.cat(picked)
    labels = pool.labels[rows]  # (N,)
    x = to_input(torch.cat([pool.images[rows], synthetic]).to(device))  # (2N, 1, H, W) float in [0, 1]
    y = torch.cat([labels, labels]).tolist()
    maps = _maps(model, layers, x, y, method=method, reshape_transform=reshape_transform, seed=seed)
    return _assemble(pool, classes, tuple(display or classes), names, picked, x, maps)


def _pairs(pool: ImageSet, classes: tuple[str, ...], names: Sequence[str], pairs: int, seed: int,
           generator: Generator, cache: GenerationCache, quiet: bool, salt: str | None) -> tuple[list[Any], torch.Tensor]:
    """Per class, the source rows kept (refused variations dropped), and their variations in that order."""
    import torch

    picked = _pick(pool, classes, names, pairs, seed)
    made = _variations(generator, pool, torch.cat(picked), cache=cache, quiet=quiet, salt=salt)
    picked = [sel[torch.tensor([made[int(r)] is not None for r in sel], dtype=torch.bool)] for sel in picked]
    for name, sel in zip(names, picked):
        if not len(sel):
            raise SynthmedError(f"generator {generator.name!r} refused every variation of class {name!r} — "
                                "try another generator (--generator) or more pairs")
    return picked, torch.stack([made[int(r)] for r in torch.cat(picked)])  # (N, 1, H, W) uint8


def _maps(model: nn.Module, layers: list[nn.Module], x: torch.Tensor, y: list[int], *, method: str,
          reshape_transform: Any, seed: int) -> dict[str, np.ndarray]:
    """Probabilities, maps for the true and the predicted class, and ROAD faithfulness of ``x``."""
    import numpy as np
    import torch

    from synthmed.gradcam.metrics import faithfulness

    with cam_session(model, layers, reshape_transform=reshape_transform, method=method) as maps:
        cam_true, logits = maps(x, y)  # (2N, H, W), (2N, C)
        probs = logits.float().softmax(1).cpu().numpy()
        pred = probs.argmax(1)  # (2N,)
        cam_pred = cam_true.copy()  # the true class's map wherever it is also the predicted one
        wrong = np.flatnonzero(pred != np.asarray(y))
        if len(wrong):
            cam_pred[wrong] = maps(x[torch.from_numpy(wrong).to(x.device)], pred[wrong].tolist())[0]
        faith = faithfulness(model, x, cam_pred, pred.tolist(), seed=seed)  # (2N,)
    return {"cam_true": cam_true, "cam_pred": cam_pred, "probs": probs, "faith": faith}


def _assemble(pool: ImageSet, classes: tuple[str, ...], display: tuple[str, ...], names: Sequence[str],
              picked: list[Any], x: torch.Tensor, maps: dict[str, np.ndarray]) -> tuple[list[ClassPanel], list[dict[str, Any]]]:
    """Cut the batch back into one panel per class and one record per pair."""
    from synthmed.gradcam.figures import ClassPanel

    cam_true, cam_pred, probs, faith = maps["cam_true"], maps["cam_pred"], maps["probs"], maps["faith"]
    n, images = sum(len(sel) for sel in picked), x[:, 0].cpu().numpy()  # (2N, H, W)
    panels, records, start = [], [], 0
    for name, sel in zip(names, picked):
        k, part = len(sel), slice(start, start + len(sel))
        syn = slice(n + start, n + start + k)
        start += k
        panel = ClassPanel(name, classes.index(name), display, images[part], images[syn], probs[part],
                           probs[syn], cam_true[part], cam_pred[part], cam_true[syn], cam_pred[syn],
                           pool.index[sel].numpy())
        records += _records(panel, classes, faith[part], faith[syn])
        panels.append(panel)
    return panels, records


def _records(panel: ClassPanel, classes: tuple[str, ...], faith_real: np.ndarray,
             faith_synthetic: np.ndarray) -> list[dict[str, Any]]:
    """The numbers of each pair of one class (agreement against a same-class real baseline)."""
    from synthmed.gradcam.metrics import agreement, finite_or_none, is_empty

    k = len(panel)
    same = agreement(panel.cam_real_true, panel.cam_synthetic_true)
    other = agreement(panel.cam_real_true, panel.cam_real_true[[(i + 1) % k for i in range(k)]])
    return [{
        "class": panel.class_name, "source_row": int(panel.source_rows[i]),
        "pred_real": classes[int(panel.probs_real[i].argmax())],
        "pred_synthetic": classes[int(panel.probs_synthetic[i].argmax())],
        "p_true_real": float(panel.probs_real[i, panel.label]),
        "p_true_synthetic": float(panel.probs_synthetic[i, panel.label]),
        "agreement_pearson": finite_or_none(same["pearson"][i]),
        "agreement_top20_iou": finite_or_none(same["top20_iou"][i]),
        "baseline_pearson": finite_or_none(other["pearson"][i]) if k > 1 else None,
        "baseline_top20_iou": finite_or_none(other["top20_iou"][i]) if k > 1 else None,
        "faithfulness_real": float(faith_real[i]),
        "faithfulness_synthetic": float(faith_synthetic[i]),
        "empty_share_real": float(is_empty(panel.cam_real_true[i])),
        "empty_share_synthetic": float(is_empty(panel.cam_synthetic_true[i])),
    } for i in range(k)]
