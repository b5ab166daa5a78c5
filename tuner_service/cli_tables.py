"""Tables and numbers for the CLI: rounded to significant digits and fitted to the terminal (80 columns off a
terminal), dropping the least important columns rather than cutting numbers short (``--wide`` keeps them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

# Hyperparameter and metric names as column headers: short enough that six of them fit 80 columns.
ABBREVIATIONS = {
    "batch_size": "batch",
    "hidden_layers": "layers",
    "learning_rate": "lr",
    "momentum": "mom",
    "neurons": "units",
    "optimizer": "opt",
    "activation": "act",
    "dropout": "drop",
    "val_accuracy": "val_acc",
    "accuracy": "acc",
    "val_loss": "val_loss",
    "output_activation": "out_act",
}
NARROW_HEADER = 8


def sig(value: Any, digits: int = 3) -> str:
    """A number rounded to ``digits`` significant digits (``0.000123``, ``1.7``, ``1.23e+05``); other values as
    text; None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value != value:
        return "nan"
    return f"{value:.{digits}g}"


def duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h10m``: a duration as people read it."""
    if seconds is None:
        return ""
    total = round(seconds)
    if total < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def header(name: str) -> str:
    """A short column header for a hyperparameter or metric name."""
    if name in ABBREVIATIONS:
        return ABBREVIATIONS[name]
    return name if len(name) <= NARROW_HEADER else name[: NARROW_HEADER - 1] + "…"


@dataclass(frozen=True)
class Column:
    """One column: its header, whether numbers line up right, and whether it may be left out to fit."""

    title: str
    numeric: bool = False
    optional: bool = False
    max_width: int | None = None


def fitted_table(
    console: Console, title: str, columns: list[Column], rows: list[list[str]], *, wide: bool = False
) -> Table:
    """A table no wider than the console: optional columns are dropped from the right until it fits (a caption
    names them); with ``wide`` every column and whole texts are kept."""
    keep = list(range(len(columns)))
    while True:
        table = _table(title, [columns[i] for i in keep], [[row[i] for i in keep] for row in rows], wide)
        dropped = [columns[i].title for i in range(len(columns)) if i not in keep]
        if dropped:
            table.caption = f"not shown: {', '.join(dropped)} (--wide or --json for every column)"
        optional = [i for i in keep if columns[i].optional]
        if wide or not optional or natural_width(console, table) <= console.width:
            return table
        keep.remove(optional[-1])


def print_table(console: Console, table: Table, *, wide: bool = False) -> None:
    """Print the table; a ``wide`` one at its full width even where the console is narrower (a pipe, a log)."""
    if not wide:
        console.print(table)
        return
    narrow = console.width
    console.width = max(narrow, natural_width(console, table))  # print() alone never goes past the console's width
    try:
        console.print(table)
    finally:
        console.width = narrow


def natural_width(console: Console, table: Table) -> int:
    """The width the table takes uncut (``console.measure`` alone stops at the console's width)."""
    return console.measure(table, options=console.options.update_width(10_000)).maximum


def _table(title: str, columns: list[Column], rows: list[list[str]], wide: bool) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left", caption_justify="left")
    for column in columns:
        table.add_column(
            column.title,
            justify="right" if column.numeric else "left",
            no_wrap=True,
            overflow="ellipsis",
            max_width=None if wide else column.max_width,
        )
    for row in rows:
        table.add_row(*row)
    return table
