"""Backend ``sd15``: Stable Diffusion 1.5 + LoRA + ControlNet canny, NetDiffusion's method (see backend.py)."""
