"""How sharp must the ``ldm`` autoencoder be? Reconstructions judged by the reference classifier.

Trains MONAI ``AutoencoderKL`` variants (L1 + 1e-6 KL, optionally + ``g`` x L1 of the image gradients)
on a 30% sample of the real training split less 200 held-back images, then gives the reference classifier
(the one ``inspect-generator`` uses) the held-back images' reconstructions: per-class accuracy beside
its accuracy on the originals. A variant is ``name:channels:latent_channels:g``, e.g. ``f4:8-16-32:4:0``
(three levels: a latent of side/4).

    PYTHONPATH=src python benchmarks/probe_ldm_autoencoder.py --data-dir ../shared/data/alzheimer_mri \\
        --image-size 64 --steps 300 f8c4:8-16-32-64:4:0 f4c4:8-16-32:4:0 f8c16:8-16-32-64:16:0
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    import torch
    from monai.networks.nets import AutoencoderKL

    from synthmed.config import Config
    from synthmed.data.loading import load_splits, sample_real
    from synthmed.inspection.run import reference_for

    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("variants", nargs="+")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = Config(data_dir=args.data_dir, image_size=args.image_size, real_frac=0.3, quiet=True)
    splits = load_splits(cfg)
    real, _ = sample_real(splits, cfg)
    reference, _ = reference_for(splits, cfg)
    x, y = real.images.float() / 255, real.labels
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    held, train = perm[:200], perm[200:]

    def accuracy(images: torch.Tensor) -> list[float]:
        pred = reference.predict((images.clamp(0, 1) * 255).round().to(torch.uint8))
        return [round(float((pred[y[held] == c] == c).float().mean()), 2) for c in range(splits.num_classes)]

    print("originals: reference accuracy per class", accuracy(x[held]))
    for variant in args.variants:
        name, channels, latent, grad = variant.split(":")
        ch = tuple(int(c) for c in channels.split("-"))
        torch.manual_seed(0)
        ae = AutoencoderKL(spatial_dims=2, in_channels=1, out_channels=1, channels=ch, latent_channels=int(latent),
                           num_res_blocks=1, attention_levels=(False,) * len(ch), norm_num_groups=8,
                           with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
        opt = torch.optim.Adam(ae.parameters(), 1e-3)
        start = time.perf_counter()
        for _ in range(args.steps):
            b = x[train[torch.randint(0, len(train), (16,), generator=g)]]  # (16, 1, H, W)
            mu, sigma = ae.encode(b)
            rec = ae.decode(mu + sigma * torch.randn(mu.shape, generator=g))
            kl = 0.5 * (mu**2 + sigma**2 - torch.log(sigma**2 + 1e-12) - 1).sum((1, 2, 3)).mean()
            edges = (rec.diff(dim=-1) - b.diff(dim=-1)).abs().mean() + (rec.diff(dim=-2) - b.diff(dim=-2)).abs().mean()
            loss = (rec - b).abs().mean() + float(grad) * edges + 1e-6 * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            r = torch.cat([ae.decode(ae.encode(c)[0]) for c in x[held].split(50)])
        print(f"{name} channels {ch} latent {tuple(mu.shape[1:])}: {seconds:.0f} s, held-back L1 "
              f"{float((r.clamp(0, 1) - x[held]).abs().mean()):.4f}, reference accuracy {accuracy(r)}", flush=True)


if __name__ == "__main__":
    main()
