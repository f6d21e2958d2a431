"""The paper's activation-memory accounting (reference `language_modelling/train.py`), shared by training logs and
memprofile.

    normal bits   = Σ_layers 32 · T · B · H_l   (×2 for LSTMs: h and c)   what ordinary BPTT stores
    used bits     = what the reversible model keeps: buffer bytes + sealed heads
    optimal bits  = Σ −log2 z over every forget gate applied (the information actually destroyed)

Ratios: ``ratio_used`` = normal / used (the paper's "actual" saving), ``ratio_optimal`` = normal /
optimal, ``used_over_optimal`` = how close the buffer is to the information-theoretic minimum.
Only the hidden states count on the standard side and only the buffer on the reversible side, as
in the paper's code; what the machine really keeps is measured separately (:mod:`.measure`).
"""

from __future__ import annotations

from ..engine.reversible import normal_bits


def memory_ratios(bits: dict) -> dict:
    """Ratios from a dict with ``normal_bits``, ``used_bits`` and (optionally) ``optimal_bits``."""
    normal, used, optimal = bits.get("normal_bits", 0), bits.get("used_bits", 0), bits.get("optimal_bits", 0)
    if not normal or not used:
        return {}
    out = {"ratio_used": normal / used}
    if optimal:
        out["ratio_optimal"] = normal / optimal
        out["used_over_optimal"] = used / optimal
    return out


SIDES = ("enc", "dec")
"""Prefixes of the per-side accounting of an encoder-decoder (the reference's nmt code reports the two apart)."""


def all_ratios(bits: dict) -> dict:
    """:func:`memory_ratios` of the totals, plus ``enc_…`` / ``dec_…`` ratios where the dict holds
    ``enc_normal_bits`` etc. (translation)."""
    out = memory_ratios(bits)
    for side in SIDES:
        sub = {k.removeprefix(f"{side}_"): v for k, v in bits.items() if k.startswith(f"{side}_")}
        out.update({f"{side}_{k}": v for k, v in memory_ratios(sub).items()})
    return out


__all__ = ["SIDES", "all_ratios", "memory_ratios", "normal_bits"]
