"""Exit codes and the user-facing error type shared by every command.

Scripts rely on these codes (``revrnn train … || handle $?``), so they are fixed here, once:

    0   success
    1   a check failed (verify-reversal: not exact, or gradients disagree)
    2   usage or spec error (bad argument, unknown key, wrong type, impossible combination)
    3   data error (missing, corrupt or truncated data files)
    4   non-finite values (loss, gradient, or NaN/inf reaching the fixed-point engine): stopped, never trained on
    5   numerical error in the fixed-point engine (state overflow, failed reversal)
    130 interrupted by SIGINT (after saving), 143 terminated by SIGTERM (after saving)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_NONFINITE = 4
EXIT_NUMERIC = 5
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class UserError(Exception):
    """An error caused by input the user can fix; printed as one line, never as a traceback."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class SpecError(UserError):
    """A spec file or override that does not validate: names the file, the key and what is allowed."""

    exit_code = EXIT_USAGE
