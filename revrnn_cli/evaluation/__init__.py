"""Evaluation metrics: corpus BLEU for the translation experiments."""

from .bleu import detokenize, sacre_bleu, tokenized_bleu

__all__ = ["detokenize", "sacre_bleu", "tokenized_bleu"]
