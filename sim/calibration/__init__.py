"""Calibration: measure the GPU (or CPU) cost of diffusion serving and write a profile.

Modules: `configs` (architectures as data), `build` (modules and workloads), `timing`,
`flops`, `device`, `profile` (the JSON and Markdown files), `runner` (the measurement loop),
`listing` (`floodgate profiles`) and `cli`. Only `build`, `timing`, `flops`, `device` and
`runner` import torch, and only `cli`'s calibrate handler imports them, so `floodgate run`
never loads torch.
"""
