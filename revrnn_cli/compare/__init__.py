"""``revrnn compare``: runs side by side, from their directories alone.

    revrnn compare runs/ptb_lstm_small runs/ptb_revlstm_small
    revrnn compare runs/ptb_*_small --json | jq '.runs[].results.best_valid_ppl'
    revrnn compare runs/ptb_lstm_small runs/ptb_revlstm_small --plot compare.png

:mod:`.summary` reads what each run reached, :mod:`.table` prints it, :mod:`.plot` draws it.
"""

from .summary import compare, summarize

__all__ = ["compare", "summarize"]
