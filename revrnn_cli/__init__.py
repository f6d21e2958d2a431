"""revrnn: reversible recurrent neural networks (MacKay, Vicol, Ba, Grosse; NeurIPS 2018).

The engine (:mod:`revrnn_cli.engine`) is usable as a library; the ``revrnn`` command line
(:mod:`revrnn_cli.cli`) runs experiments from YAML specs.
"""

__version__ = "0.1.0"
