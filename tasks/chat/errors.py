"""The two ways chat data goes wrong: a file nobody can use, and a row that is skipped.

`ChatDataError` is a whole input the pipeline cannot use (no usable row, a layout it cannot
tell, broken JSON); its message is one line, which the CLI prints with exit code 2. `Skip` is
raised by an importer for one bad row; the loader counts it under its reason and goes on.
"""

from __future__ import annotations


class ChatDataError(ValueError):
    """Chat or preference data the pipeline cannot use; the message is one line."""


class Skip(Exception):
    """One row is unusable; `reason` is the short name it is counted under (e.g. "empty_content")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
