"""Models built from the engine: the language model and the ordinary baselines."""

from .baseline import BaselineRNN
from .lm import IGNORE_INDEX, LMConfig, RNNLanguageModel, SegmentResult

__all__ = ["BaselineRNN", "IGNORE_INDEX", "LMConfig", "RNNLanguageModel", "SegmentResult"]
