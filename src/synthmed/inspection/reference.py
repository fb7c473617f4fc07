"""A reference classifier: feature extractor and label judge for inspecting generated images.

The built-in ``cnn`` architecture, trained once per (dataset fingerprint, image size, budget) on
the FULL real training split it is given — never on test images: :meth:`ReferenceClassifier.fit_or_load`
takes the train :class:`~synthmed.data.base.ImageSet` only — and cached on disk at
``<root>/_reference/<key>.pt``. It is never used to train or select anything; it only measures.

Features are its penultimate activations (64 values), not Inception's: no weight download, and
grayscale MRI is far from ImageNet. FD/KID values computed on them are therefore NOT comparable
to published FID/KID numbers — only to each other, for the same reference classifier.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from synthmed.config import Config
from synthmed.evaluation import predict_logits, to_input
from synthmed.paths import atomic_write
from synthmed.plugins import registry
from synthmed.runtime import cpu_has_bf16

if TYPE_CHECKING:
    from torch import nn

    from synthmed.data.base import ImageSet

VERSION = 2  # bump when the architecture, training or features change: invalidates caches
EPOCHS = 8  # 3 left the rare classes unlearned (Moderate_Demented fidelity 0 at 64 px)
LR = 1e-3
BATCH_SIZE = 64
SEED = 0


def _bf16_ok() -> bool:
    return cpu_has_bf16()


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 1, H, W) → uint8 (N, 1, size, size) (no-op when already that size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _build(num_classes: int, image_size: int) -> nn.Module:
    return registry("models").get("cnn")().create(num_classes, image_size, Config(model="cnn", pretrained=False))


def _train(model: nn.Module, train: ImageSet, *, epochs: int, lr: float, batch_size: int, seed: int, quiet: bool) -> None:
    """Plain Adam + cross-entropy on ``train`` (module-level so tests can count calls)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    use_bf16 = _bf16_ok()
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(train), generator=g)
        total = 0.0
        for s in range(0, len(perm), batch_size):
            rows = perm[s:s + batch_size]
            x, y = to_input(train.images[rows]), train.labels[rows]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        if not quiet:
            print(f"reference classifier: epoch {epoch + 1}/{epochs} loss {total / max(len(train), 1):.4f}", file=sys.stderr)
    model.eval()


def cache_key(fingerprint: str, image_size: int, num_classes: int, *, epochs: int = EPOCHS, lr: float = LR,
              batch_size: int = BATCH_SIZE, seed: int = SEED) -> str:
    raw = f"{fingerprint}|{image_size}|{num_classes}|cnn|{epochs}|{lr}|{batch_size}|{seed}|v{VERSION}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


@dataclass
class ReferenceClassifier:
    """A trained ``cnn`` used only to measure generated images (features and predicted labels)."""

    model: nn.Module
    num_classes: int
    image_size: int
    key: str

    @classmethod
    def fit_or_load(
        cls, train: ImageSet, num_classes: int, image_size: int, fingerprint: str, root: str | os.PathLike,
        *, quiet: bool = True, epochs: int = EPOCHS,
    ) -> tuple[ReferenceClassifier, bool]:
        """Load the cached classifier for this key, or train it on ``train`` and cache it.

        Returns ``(classifier, from_cache)``. The file is written atomically
        (synthmed.paths.atomic_write), so concurrent runs at worst both train.
        """
        key = cache_key(fingerprint, image_size, num_classes, epochs=epochs)
        path = Path(root) / "_reference" / f"{key}.pt"
        model = _build(num_classes, image_size)
        if path.is_file():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                model.load_state_dict(state["model"])
                model.eval()
                return cls(model, num_classes, image_size, key), True
            except Exception:  # a corrupt or foreign file: retrain and overwrite
                pass
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model = _build(num_classes, image_size)
            data = train if train.images.shape[-1] == image_size else type(train)(
                _resize(train.images, image_size), train.labels, train.index, train.synthetic)
            _train(model, data, epochs=epochs, lr=LR, batch_size=BATCH_SIZE, seed=SEED, quiet=quiet)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: torch.save({"model": model.state_dict(), "key": key, "version": VERSION,
                                                  "num_classes": num_classes, "image_size": image_size}, fh))
        return cls(model, num_classes, image_size, key), False

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.classifier[:-1](m.block2(m.block1(x)))  # everything but the output layer

    def features(self, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """uint8 ``(N, 1, H, W)`` → float32 ``(N, D)`` penultimate activations (D = 64).

        The last result is memoised by a hash of the images' bytes, so inspecting several
        generations against one real split runs the real images through the network once.
        """
        digest = hashlib.sha256(str(tuple(images.shape)).encode() + images.contiguous().numpy().tobytes()).hexdigest()
        memo = self.__dict__.setdefault("_memo", {})
        if digest not in memo:
            if len(memo) >= 2:
                memo.pop(next(iter(memo)))
            memo[digest] = self._features(images, batch_size)
        return memo[digest].clone()

    def predict_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` features from :meth:`features` → ``(N,)`` int64 predicted classes."""
        with torch.inference_mode():
            return self.model.classifier.out(features.float()).argmax(1).long()

    def _features(self, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        images = _resize(images, self.image_size)
        self.model.eval()
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), batch_size):
                out.append(self._body(to_input(images[s:s + batch_size])).float())
        return torch.cat(out) if out else torch.empty(0, 64)

    def predict(self, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """uint8 ``(N, 1, H, W)`` → ``(N,)`` int64 predicted classes."""
        logits = predict_logits(self.model, _resize(images, self.image_size), batch_size=batch_size)
        return logits.argmax(1).long() if len(logits) else torch.empty(0, dtype=torch.long)
