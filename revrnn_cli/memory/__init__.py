"""Activation memory: the paper's accounting (:mod:`.accounting`), what the machine measures
(:mod:`.measure`), and the four-way comparison behind ``revrnn memprofile`` (:mod:`.profile`)."""

from .accounting import memory_ratios, normal_bits

__all__ = ["memory_ratios", "normal_bits"]
