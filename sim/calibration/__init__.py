"""Calibration: GPU (or CPU) cost of the diffusion denoising kernel, measured with torch."""
