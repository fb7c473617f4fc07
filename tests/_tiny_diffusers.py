"""Tiny, randomly initialised Stable Diffusion pipelines saved to a folder (no download, < 1 MB).

Built the way diffusers' own tests build theirs (``get_dummy_components``): a 2-level
``UNet2DConditionModel``, a 2-level ``AutoencoderKL`` (scale factor 2, so 32 px images), and a
1-layer CLIP text encoder with a byte-level ``CLIPTokenizer`` whose vocabulary is written here —
or, for the image-variation pipeline, a tiny CLIP vision encoder and image processor.
"""

from __future__ import annotations

from pathlib import Path

SIDE = 32  # the tiny pipelines' native image size (UNet sample 16 x VAE factor 2)


def byte_vocab() -> dict[str, int]:
    """CLIP's byte-level alphabet (GPT-2's bytes_to_unicode) as single-char tokens, no merges."""
    chars = [chr(c) for c in _byte_chars()]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def _byte_chars() -> list[int]:
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return cs


def _unet_and_vae(cross_attention_dim: int):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=SIDE // 2, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=4, norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=[8, 16], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], sample_size=SIDE,
    )
    return unet, vae


def _scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def save_tiny_img2img(folder: Path, seed: int = 0) -> Path:
    """A tiny ``StableDiffusionImg2ImgPipeline`` saved to ``folder`` (returned)."""
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet, vae = _unet_and_vae(16)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=16, intermediate_size=32,
        num_attention_heads=2, num_hidden_layers=1, vocab_size=600, projection_dim=16, max_position_embeddings=77,
    ))
    tokenizer = CLIPTokenizer(vocab=byte_vocab(), merges=[], model_max_length=77)
    pipe = StableDiffusionImg2ImgPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def save_tiny_image_variation(folder: Path, seed: int = 0) -> Path:
    """A tiny ``StableDiffusionImageVariationPipeline`` (CLIP image conditioning) saved to ``folder``."""
    import torch
    from diffusers import StableDiffusionImageVariationPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    unet, vae = _unet_and_vae(16)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
        projection_dim=16, image_size=SIDE, patch_size=8,
    ))
    processor = CLIPImageProcessor(crop_size=SIDE, size=SIDE)
    pipe = StableDiffusionImageVariationPipeline(
        vae=vae, image_encoder=image_encoder, unet=unet, scheduler=_scheduler(),
        safety_checker=None, feature_extractor=processor, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder
