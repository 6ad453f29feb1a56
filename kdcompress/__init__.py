"""kdcompress: hardware-aware distillation, export and validation of transformer encoders."""

__version__ = "0.1.0"
