"""Architectures to calibrate, as data: diffusers / transformers config dicts (random weights).

Full-size configs follow ../shared/reference/diffusion_kernels.md (SD 1.5, SDXL, SD3-medium,
the SD VAE, CLIP ViT-L/14, OpenCLIP bigG, T5-XXL encoder). The tiny-* configs keep each
architecture's shape (same block types, conditioning and latent factor 8) at a size that runs
in milliseconds on a CPU, for tests.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

COMPONENTS = ("text_encode", "denoise_step", "vae_decode")

# ---- text encoders ----
CLIP_L = {
    "class": "CLIPTextModel",
    "tokens": 77,
    "config": {
        "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
        "num_attention_heads": 12, "vocab_size": 49408, "max_position_embeddings": 77,
        "hidden_act": "quick_gelu", "projection_dim": 768,
    },
}
CLIP_BIG_G = {
    "class": "CLIPTextModelWithProjection",
    "tokens": 77,
    "config": {
        "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
        "num_attention_heads": 20, "vocab_size": 49408, "max_position_embeddings": 77,
        "hidden_act": "gelu", "projection_dim": 1280,
    },
}
T5_XXL = {
    "class": "T5EncoderModel",
    "tokens": 256,  # SD3's max_sequence_length
    "config": {
        "d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 24,
        "vocab_size": 32128, "feed_forward_proj": "gated-gelu",
        "relative_attention_num_buckets": 32,
    },
}
TINY_CLIP = {
    "class": "CLIPTextModel",
    "tokens": 77,
    "config": {
        "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 1000, "max_position_embeddings": 77,
        "hidden_act": "quick_gelu", "projection_dim": 32,
        "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,  # inside the small vocab
    },
}
TINY_CLIP_PROJ = {**TINY_CLIP, "class": "CLIPTextModelWithProjection"}
TINY_T5 = {
    "class": "T5EncoderModel",
    "tokens": 32,
    "config": {
        "d_model": 32, "d_ff": 37, "d_kv": 8, "num_heads": 4, "num_layers": 2,
        "vocab_size": 1000, "feed_forward_proj": "gated-gelu",
        "relative_attention_num_buckets": 8,
    },
}

# ---- VAE decoders ----
SD_VAE = {
    "class": "AutoencoderKL",
    "config": {
        "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
        "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32,
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
        "sample_size": 512, "scaling_factor": 0.18215,
    },
}
SD3_VAE = {
    "class": "AutoencoderKL",
    "config": {
        **SD_VAE["config"], "latent_channels": 16, "sample_size": 1024,
        "scaling_factor": 1.5305, "shift_factor": 0.0609,
        "use_quant_conv": False, "use_post_quant_conv": False,
    },
}
TINY_VAE = {
    "class": "AutoencoderKL",
    "config": {
        **SD_VAE["config"], "layers_per_block": 1, "block_out_channels": [8, 16, 32, 32],
        "norm_num_groups": 8, "sample_size": 128,
    },
}
TINY_VAE16 = {"class": "AutoencoderKL", "config": {**TINY_VAE["config"], "latent_channels": 16}}

# ---- denoisers ----
SD15_UNET = {
    "class": "UNet2DConditionModel",
    "config": {
        "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
        "attention_head_dim": 8, "norm_num_groups": 32,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    },
}
SDXL_UNET = {
    "class": "UNet2DConditionModel",
    "config": {
        "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
        "block_out_channels": [320, 640, 1280], "attention_head_dim": [5, 10, 20],
        "transformer_layers_per_block": [1, 2, 10], "cross_attention_dim": 2048,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816, "use_linear_projection": True,
        "norm_num_groups": 32,
    },
}
SD3_MEDIUM = {
    "class": "SD3Transformer2DModel",
    "config": {
        "sample_size": 128, "patch_size": 2, "in_channels": 16, "out_channels": 16,
        "num_layers": 24, "attention_head_dim": 64, "num_attention_heads": 24,
        "joint_attention_dim": 4096, "caption_projection_dim": 1536,
        "pooled_projection_dim": 2048, "pos_embed_max_size": 192,
    },
}
TINY_UNET = {
    "class": "UNet2DConditionModel",
    "config": {
        "sample_size": 16, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
        "block_out_channels": [32, 64], "cross_attention_dim": 32, "attention_head_dim": 8,
        "norm_num_groups": 32,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    },
}
TINY_SDXL_UNET = {
    "class": "UNet2DConditionModel",
    "config": {
        "sample_size": 16, "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
        "block_out_channels": [32, 64], "attention_head_dim": [2, 4],
        "transformer_layers_per_block": [1, 2], "cross_attention_dim": 64,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 80, "use_linear_projection": True,
        "norm_num_groups": 32,
    },
}
TINY_DIT = {
    "class": "SD3Transformer2DModel",
    "config": {
        "sample_size": 16, "patch_size": 2, "in_channels": 16, "out_channels": 16,
        "num_layers": 2, "attention_head_dim": 8, "num_attention_heads": 4,
        "joint_attention_dim": 32, "caption_projection_dim": 32,
        "pooled_projection_dim": 64, "pos_embed_max_size": 32,
    },
}

# A model: its denoiser, VAE and text encoders, the conditioning the denoiser sees
# (`tokens` x `cond_dim`, pooled `pooled_dim`) and its default image resolution in pixels.
MODELS: dict[str, dict[str, Any]] = {
    "sd15": {
        "denoiser": SD15_UNET, "vae": SD_VAE, "text_encoders": [CLIP_L],
        "tokens": 77, "cond_dim": 768, "pooled_dim": None, "resolution": 512,
    },
    "sdxl": {
        "denoiser": SDXL_UNET, "vae": SD_VAE, "text_encoders": [CLIP_L, CLIP_BIG_G],
        "tokens": 77, "cond_dim": 2048, "pooled_dim": 1280, "resolution": 1024,
    },
    "sd3-medium": {
        "denoiser": SD3_MEDIUM, "vae": SD3_VAE, "text_encoders": [CLIP_L, CLIP_BIG_G, T5_XXL],
        "tokens": 77 + 256, "cond_dim": 4096, "pooled_dim": 2048, "resolution": 1024,
    },
    "tiny-unet": {
        "denoiser": TINY_UNET, "vae": TINY_VAE, "text_encoders": [TINY_CLIP],
        "tokens": 77, "cond_dim": 32, "pooled_dim": None, "resolution": 128,
    },
    "tiny-sdxl": {
        "denoiser": TINY_SDXL_UNET, "vae": TINY_VAE, "text_encoders": [TINY_CLIP, TINY_CLIP_PROJ],
        "tokens": 77, "cond_dim": 64, "pooled_dim": 32, "resolution": 128,
    },
    "tiny-dit": {
        "denoiser": TINY_DIT, "vae": TINY_VAE16,
        "text_encoders": [TINY_CLIP, TINY_CLIP_PROJ, TINY_T5],
        "tokens": 77 + 32, "cond_dim": 32, "pooled_dim": 64, "resolution": 128,
    },
}
TINY = tuple(m for m in MODELS if m.startswith("tiny-"))


def vae_factor(model: str) -> int:
    """Pixels per latent cell: 2 ** (number of VAE blocks - 1)."""
    return 2 ** (len(MODELS[model]["vae"]["config"]["block_out_channels"]) - 1)


def resolution_step(model: str) -> int:
    """Image resolutions must be multiples of this (VAE factor x denoiser downsampling/patch)."""
    den = MODELS[model]["denoiser"]
    cfg = den["config"]
    if den["class"] == "SD3Transformer2DModel":
        inner = cfg["patch_size"]
    else:
        inner = 2 ** (len(cfg["block_out_channels"]) - 1)
    return vae_factor(model) * inner


def max_resolution(model: str) -> int | None:
    """SD3's positional embedding is cropped from a fixed grid; UNets have no limit."""
    cfg = MODELS[model]["denoiser"]["config"]
    if "pos_embed_max_size" in cfg:
        return cfg["pos_embed_max_size"] * cfg["patch_size"] * vae_factor(model)
    return None


def config_hash(obj: Any) -> str:
    """Short SHA-256 of the canonical JSON of a config (what the timing was measured on)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def component_config(model: str, component: str) -> Any:
    """The config(s) that one component of a model runs."""
    spec = MODELS[model]
    return {
        "text_encode": spec["text_encoders"],
        "denoise_step": spec["denoiser"],
        "vae_decode": spec["vae"],
    }[component]
