"""``revrnn compare``'s table: one column per run, the spec keys that differ, then what each reached.

Only the keys whose values differ are shown, because two runs of the same experiment share almost
every value and the few that differ are the point of the comparison.
"""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from ..console import err, fmt

# (label, key in results, digits) in the order they are shown; a row nobody has is left out
RESULT_ROWS = [
    ("epochs", "epochs", 4), ("best valid ppl", "best_valid_ppl", 4), ("last valid ppl", "last_valid_ppl", 4),
    ("best valid accuracy", "best_valid_accuracy", 4), ("last valid accuracy", "last_valid_accuracy", 4),
    ("best valid BLEU", "best_valid_bleu", 4), ("last valid BLEU", "last_valid_bleu", 4),
    ("tokens/s (train)", "tokens_per_s", 4), ("training minutes", "train_minutes", 3),
    ("normal/used", "ratio_used", 4), ("used/optimal", "used_over_optimal", 4),
    ("encoder normal/used", "enc_ratio_used", 4), ("decoder normal/used", "dec_ratio_used", 4),
    ("parameters", "parameters", 4), ("stopped", "stopped", 4),
]


def _value(v, digits: int) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and v >= 1e4:
        return f"{v:,.0f}"
    if isinstance(v, (list, dict)):
        return str(v)
    return fmt(v, digits)


def print_table(result: dict) -> None:
    """The comparison on stderr."""
    runs = result["runs"]
    t = Table(title="revrnn compare", title_justify="left")
    t.add_column("")
    for r in runs:
        t.add_column(escape(r["label"]), justify="right")
    keys = result["differing_keys"]
    for k in keys:
        t.add_row(escape(k), *[escape(_value(r["spec"].get(k), 4)) for r in runs])
    if not keys and len(runs) > 1:
        t.add_row("[dim](same spec)[/]", *["" for _ in runs])
    first = True
    for label, key, digits in RESULT_ROWS:
        if all(r["results"].get(key) is None for r in runs):
            continue
        t.add_row(escape(label), *[escape(_value(r["results"].get(key), digits)) for r in runs],
                  end_section=False)
        if first and keys:
            t.rows[len(keys) - 1].end_section = True  # a rule between the spec and the results
            first = False
    err.print(t)
    if any(r["results"].get("ratio_used") is None for r in runs) and any(r["results"].get("ratio_used") for r in runs):
        err.print("normal/used: the paper's accounting of the hidden states, summed over the training "
                  "intervals; '-' = an ordinary model, which stores them all")


__all__ = ["RESULT_ROWS", "print_table"]
