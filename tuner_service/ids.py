"""Row ids as callers may name them: ASCII digits within the database's integer range.

Ids live in INTEGER columns, which PostgreSQL keeps in 32 bits; a larger number (or a Unicode digit such
as ``"²"``, which ``str.isdigit`` accepts but ``int`` refuses) can name no row, so it is answered like any
other id that does not exist instead of reaching the database.
"""

from __future__ import annotations

MAX_ID = 2**31 - 1


def is_id(value: object) -> bool:
    """True for an int (not a bool) that a row id can be: 1 .. MAX_ID."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


def is_trial_number(value: object) -> bool:
    """True for an int (not a bool) that a trial's number within its study can be: 0 .. MAX_ID."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def looks_like_id(text: str) -> bool:
    """True when ``text`` is written as an id (ASCII digits only), whether or not it is in range."""
    return text.isascii() and text.isdigit()


def parse_id(text: str) -> int | None:
    """The id ``text`` names, or None when it is not ASCII digits or is outside 1 .. MAX_ID."""
    if not looks_like_id(text) or len(text) > 12:
        return None
    value = int(text)
    return value if is_id(value) else None
