"""Numbers as people read them: ``12.4 MiB``, ``1.5 s``, ``20,000``. Pure functions."""

from __future__ import annotations

__all__ = ["human_bytes", "human_count", "human_seconds"]

_BYTE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: float) -> str:
    """``n`` bytes with a binary unit and three significant digits: ``"512 B"``,
    ``"12.4 MiB"``, ``"1.50 GiB"``, ``"640 KiB"``."""
    if n < 1024:
        return f"{int(n)} B"
    value, unit = float(n), "B"
    for unit in _BYTE_UNITS:
        value /= 1024
        if round(value, 2) < 1024 or unit == _BYTE_UNITS[-1]:
            break
    return f"{_three_digits(value)} {unit}"


def _three_digits(value: float) -> str:
    if round(value, 2) < 10:
        return f"{value:.2f}"
    if round(value, 1) < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def human_seconds(seconds: float) -> str:
    """A duration: ``"0.42 s"``, ``"12.3 s"``, ``"4 min 05 s"``, ``"2 h 03 min"``."""
    if seconds < 60:
        return f"{_three_digits(seconds)} s" if seconds >= 1 else f"{seconds:.2f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def human_count(n: float) -> str:
    """A count with thousands separators: ``"20,000"`` (floats rounded to whole units)."""
    return f"{round(n):,}"
