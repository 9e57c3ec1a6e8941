"""landmark_tl: two-level image classification (category / landmark) by transfer learning."""

__version__ = "0.1.0"
