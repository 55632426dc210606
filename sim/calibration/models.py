"""Denoiser architectures as data: diffusers/transformers configs, built with random weights.

Full-size configs follow ../shared/reference/diffusion_kernels.md (SD 1.5 UNet, SDXL UNet,
SD3-medium MMDiT, the SD VAE, CLIP ViT-L text encoder); each has a tiny sibling for CPU tests.
Nothing is downloaded: `from_config` gives the architecture, weights are random.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=[320, 640, 1280, 1280], attention_head_dim=8, cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, norm_num_groups=32,
)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=[320, 640, 1280], attention_head_dim=[5, 10, 20],
    transformer_layers_per_block=[1, 2, 10], cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, use_linear_projection=True, norm_num_groups=32,
)
SD3_MEDIUM = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24,
    attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
    caption_projection_dim=1536, pooled_projection_dim=2048, pos_embed_max_size=192,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    norm_num_groups=32, sample_size=512,
)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, projection_dim=768)

TINY_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=[32, 64], attention_head_dim=4, cross_attention_dim=32,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], norm_num_groups=8,
)
TINY_SDXL = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=[32, 64], attention_head_dim=[2, 4], transformer_layers_per_block=[1, 2],
    cross_attention_dim=32, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], addition_embed_type="text_time",
    addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8,
    use_linear_projection=True, norm_num_groups=8,
)
TINY_DIT = dict(
    sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
    attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
    caption_projection_dim=32, pooled_projection_dim=32, pos_embed_max_size=16,
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
    block_out_channels=[16, 32], down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=8, sample_size=64,
)
TINY_CLIP = dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, max_position_embeddings=77, projection_dim=32,
                 bos_token_id=0, eos_token_id=2, pad_token_id=1)


@dataclass(frozen=True)
class Spec:
    """A denoiser and the VAE / text encoder that go with it."""

    kind: str  # "unet", "sdxl", "dit"
    config: dict
    vae: dict
    text: dict
    resolution: int  # default image side in pixels
    text_dim: int  # cross-attention / joint attention width
    pooled_dim: int = 0  # SDXL text_embeds, SD3 pooled projections
    vae_scale: int = 8  # pixels per latent cell


MODELS: dict[str, Spec] = {
    "sd15": Spec("unet", SD15_UNET, SD_VAE, CLIP_L, 512, 768),
    "sdxl": Spec("sdxl", SDXL_UNET, SD_VAE, CLIP_L, 1024, 2048, 1280),
    "sd3-medium": Spec("dit", SD3_MEDIUM, {**SD_VAE, "latent_channels": 16}, CLIP_L, 1024, 4096, 2048),
    "tiny-unet": Spec("unet", TINY_UNET, TINY_VAE, TINY_CLIP, 64, 32, vae_scale=2),
    "tiny-sdxl": Spec("sdxl", TINY_SDXL, TINY_VAE, TINY_CLIP, 64, 32, 32, vae_scale=2),
    "tiny-dit": Spec("dit", TINY_DIT, {**TINY_VAE, "latent_channels": 16}, TINY_CLIP, 64, 32, 32, vae_scale=2),
}


def config_hash(name: str) -> str:
    s = MODELS[name]
    blob = json.dumps({"kind": s.kind, "config": s.config, "vae": s.vae, "text": s.text}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def latent_shape(name: str, resolution: int) -> tuple[int, int, int]:
    s = MODELS[name]
    side = resolution // s.vae_scale
    ch = s.config["in_channels"]
    return ch, side, side


def build_denoiser(name: str):
    """The denoiser module (random weights); call under `torch.device(...)` to place it."""
    from diffusers import SD3Transformer2DModel, UNet2DConditionModel

    s = MODELS[name]
    if s.kind == "dit":
        return SD3Transformer2DModel.from_config(s.config)
    return UNet2DConditionModel.from_config(s.config)


def build_vae(name: str):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(MODELS[name].vae)


def build_text(name: str):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**MODELS[name].text))


def denoiser_inputs(name: str, batch: int, resolution: int, device, dtype, tokens: int = 77) -> dict:
    """Random inputs of one denoising step (never zeros: some kernels shortcut on them)."""
    import torch

    s = MODELS[name]
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    lat = rnd(batch, *latent_shape(name, resolution))
    t = torch.full((batch,), 500, device=device, dtype=torch.long if s.kind != "dit" else dtype)
    if s.kind == "dit":
        return dict(hidden_states=lat, encoder_hidden_states=rnd(batch, tokens, s.text_dim),
                    pooled_projections=rnd(batch, s.pooled_dim), timestep=t)
    kw = dict(sample=lat, timestep=t, encoder_hidden_states=rnd(batch, tokens, s.text_dim))
    if s.kind == "sdxl":
        kw["added_cond_kwargs"] = {"text_embeds": rnd(batch, s.pooled_dim), "time_ids": rnd(batch, 6)}
    return kw
