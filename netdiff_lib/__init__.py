"""netdiff: synthetic network traffic from diffusion models (library)."""

__version__ = "0.1.0"
