"""mbrec: modality-balanced multimedia recommendation (CKD, GB, OGM) on six backbones."""

__version__ = "0.1.0"
