"""Modules from config dicts (random weights) and the workloads that are timed on them.

A workload is a no-argument callable running one unit of serving work for a batch: one
denoising step (model forward, classifier-free guidance, Euler update), one VAE decode, or one
text encoding. The same code builds it on a real device for timing and on the meta device for
FLOP counting, so both see the same calls and shapes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sim.calibration.configs import MODELS, vae_factor

GUIDANCE = 7.5  # classifier-free guidance scale (any value: it only scales an add)
EULER_DT = -0.05  # sigma step of the Euler update; a Python float, so no host-device sync
# transformers models take a config object; diffusers models take the dict.
HF_CONFIGS = {
    "CLIPTextModel": "CLIPTextConfig",
    "CLIPTextModelWithProjection": "CLIPTextConfig",
    "T5EncoderModel": "T5Config",
}


def _class(name: str):
    import diffusers
    import transformers

    for lib in (diffusers, transformers):
        if hasattr(lib, name):
            return getattr(lib, name)
    raise KeyError(name)


def build_one(entry: dict, device: torch.device | str, dtype: torch.dtype) -> torch.nn.Module:
    """One module from {"class": ..., "config": {...}} with random weights, in eval mode."""
    cls = _class(entry["class"])
    with torch.device(device):  # allocate (and randomly initialise) directly on the device
        if entry["class"] in HF_CONFIGS:
            module = cls(_class(HF_CONFIGS[entry["class"]])(**entry["config"]))
        else:
            module = cls.from_config(entry["config"])
    # nn.Module.to, not diffusers' override: that one warns on every dtype cast, even when no
    # module must stay in fp32 (none of these configs has one).
    return torch.nn.Module.to(module, device=device, dtype=dtype).eval().requires_grad_(False)


def build_component(
    model: str, component: str, device: torch.device | str, dtype: torch.dtype
) -> list[torch.nn.Module]:
    """The module(s) a component runs: the denoiser, the VAE, or every text encoder."""
    spec = MODELS[model]
    if component == "text_encode":
        return [build_one(e, device, dtype) for e in spec["text_encoders"]]
    return [build_one(spec["denoiser" if component == "denoise_step" else "vae"], device, dtype)]


def _randn(shape, device, dtype) -> torch.Tensor:
    return torch.randn(shape, device=device, dtype=dtype)


def workload(
    model: str,
    component: str,
    modules: list[torch.nn.Module],
    batch: int,
    resolution: int,
    cfg: bool,
    device: torch.device | str,
    dtype: torch.dtype,
) -> Callable[[], object]:
    """A callable doing one unit of `component` work for `batch` images (random inputs)."""
    if component == "text_encode":
        return _text(model, modules, batch, device)
    if component == "vae_decode":
        return _vae(model, modules[0], batch, resolution, device, dtype)
    return _denoise(model, modules[0], batch, resolution, cfg, device, dtype)


def _text(model, encoders, batch, device):
    specs = MODELS[model]["text_encoders"]
    ids = [
        torch.randint(1, s["config"]["vocab_size"], (batch, s["tokens"]), device=device)
        for s in specs
    ]

    def run():
        return [enc(x)[0] for enc, x in zip(encoders, ids, strict=True)]

    return run


def _vae(model, vae, batch, resolution, device, dtype):
    cfg = MODELS[model]["vae"]["config"]
    side = resolution // vae_factor(model)
    z = _randn((batch, cfg["latent_channels"], side, side), device, dtype)
    scale, shift = cfg["scaling_factor"], cfg.get("shift_factor") or 0.0

    def run():
        return vae.decode(z / scale + shift, return_dict=False)[0]

    return run


def _denoise(model, net, batch, resolution, cfg, device, dtype):
    spec = MODELS[model]
    den = spec["denoiser"]["config"]
    side = resolution // vae_factor(model)
    n = 2 * batch if cfg else batch  # CFG runs the unconditional half in the same forward
    latents = _randn((batch, den["in_channels"], side, side), device, dtype)
    cond = _randn((n, spec["tokens"], spec["cond_dim"]), device, dtype)
    if spec["denoiser"]["class"] == "SD3Transformer2DModel":
        pooled = _randn((n, spec["pooled_dim"]), device, dtype)
        t = torch.rand(n, device=device, dtype=dtype) * 1000

        def forward(x):
            return net(
                hidden_states=x, encoder_hidden_states=cond, pooled_projections=pooled,
                timestep=t, return_dict=False,
            )[0]
    else:
        t = torch.randint(1, 1000, (n,), device=device)
        extra = {}
        if den.get("addition_embed_type") == "text_time":
            ids = torch.tensor([resolution, resolution, 0, 0, resolution, resolution])
            extra["added_cond_kwargs"] = {
                "text_embeds": _randn((n, spec["pooled_dim"]), device, dtype),
                "time_ids": ids.to(device=device, dtype=dtype).repeat(n, 1),
            }

        def forward(x):
            return net(x, t, encoder_hidden_states=cond, return_dict=False, **extra)[0]

    def run():
        x = torch.cat([latents, latents]) if cfg else latents
        eps = forward(x)
        if cfg:
            uncond, text = eps.chunk(2)
            eps = uncond + GUIDANCE * (text - uncond)
        return latents + EULER_DT * eps

    return run


def count_params(modules: list[torch.nn.Module]) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())
