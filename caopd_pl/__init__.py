"""caopd-pl: calibration-aware on-policy distillation in PyTorch Lightning."""

__version__ = "0.1.0"
