"""Tasks plugged into the shared training loop: language modelling (and later translation)."""
