"""The plain PyTorch pipeline as users write it, with the same model as synthmed's ``cnn``.

Hugging Face ``datasets.load_dataset(path)`` → per-item PIL transforms (Grayscale, Resize,
ToTensor; AutoAugment before ToTensor with ``--policy autoaugment``) → ``DataLoader(batch_size=32,
shuffle=True, num_workers=0)`` → :func:`synthmed.models.cnn.basic_cnn` → Adam in fp32 → test
cross-entropy and accuracy. A stratified real fraction of the training split is kept first.

    python benchmarks/plain_pipeline.py --data-dir ../shared/data/alzheimer_mri [--real-frac 0.3]
        [--epochs 4] [--policy none|autoaugment] [--max-batches N] [--no-test] [--device cpu|cuda]

Prints one JSON line: wall time, training images/s (the training loop, data loading included),
test metrics. ``benchmarks/bench_speed.py`` runs it as a subprocess.
"""

from __future__ import annotations

import argparse
import json
import time

T0 = time.perf_counter()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from datasets import load_dataset  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import transforms  # noqa: E402

from synthmed.models.cnn import basic_cnn  # noqa: E402  (the same model class as synthmed's cnn)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--real-frac", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--policy", choices=("none", "autoaugment"), default="none")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-batches", type=int, default=None, help="stop training after this many batches")
    ap.add_argument("--warmup-batches", type=int, default=2, help="batches not counted in images/s")
    ap.add_argument("--no-test", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: the model and each batch moved there, as users do")
    args = ap.parse_args()
    torch.manual_seed(args.seed)

    ds = load_dataset(args.data_dir)
    train = ds["train"]
    if args.real_frac < 1.0:
        train = train.train_test_split(train_size=args.real_frac, stratify_by_column="label",
                                       seed=args.seed)["train"]
    steps = [transforms.Grayscale(), transforms.Resize(args.image_size)]
    if args.policy == "autoaugment":
        steps.append(transforms.AutoAugment(transforms.AutoAugmentPolicy.IMAGENET))
    train_tf = transforms.Compose(steps + [transforms.ToTensor()])
    test_tf = transforms.Compose([transforms.Grayscale(), transforms.Resize(args.image_size), transforms.ToTensor()])

    def with_tf(tf):
        def apply(batch):
            return {"image": [tf(im) for im in batch["image"]], "label": batch["label"]}
        return apply

    train = train.with_transform(with_tf(train_tf))
    test = ds["test"].with_transform(with_tf(test_tf))
    num_classes = ds["train"].features["label"].num_classes
    loader = DataLoader(train, batch_size=32, shuffle=True, num_workers=0)

    device = torch.device(args.device)
    model = basic_cnn(num_classes, args.image_size).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, batches, t_train, t_start = 0, 0, 0.0, None
    done = False
    for _ in range(args.epochs):
        model.train()
        for batch in loader:
            if batches == args.warmup_batches:
                t_start = time.perf_counter()
            x, y = batch["image"].to(device), batch["label"].to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            batches += 1
            if t_start is not None:
                images += len(y)
            if args.max_batches is not None and batches >= args.max_batches:
                done = True
                break
        if done:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_train = time.perf_counter() - t_start if t_start is not None else float("nan")
    out = {"images_per_s": images / t_train if images else float("nan"), "batches": batches,
           "n_train": len(train)}
    if not args.no_test:
        model.eval()
        losses, correct, n = 0.0, 0, 0
        with torch.inference_mode():
            for batch in DataLoader(test, batch_size=256):
                x, y = batch["image"].to(device), batch["label"].to(device)
                logits = model(x)
                losses += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
                n += len(batch["label"])
        out.update(test_cross_entropy=losses / n, test_accuracy=correct / n)
    out["wall_s"] = time.perf_counter() - T0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
