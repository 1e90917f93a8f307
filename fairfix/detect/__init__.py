"""The bias detector: supervised, partial and unsupervised fitting (DESIGN.md section 1, step 1)."""

from fairfix.detect.fit import Detector, DetectorConfig, fit_detector, load_detector
from fairfix.detect.module import AttentionPool, BiasDetector

__all__ = ["AttentionPool", "BiasDetector", "Detector", "DetectorConfig", "fit_detector", "load_detector"]
