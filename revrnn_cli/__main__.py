"""``python -m revrnn_cli`` runs the ``revrnn`` command line (and works under ``torchrun``)."""

from .cli import main

main()
