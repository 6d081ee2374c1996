"""Markdown formatting helpers shared by the page's sections."""
from __future__ import annotations

from typing import Any, Sequence

from ..runner import PlannedRun


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> list[str]:
    """A markdown table; the first ``left`` columns left-aligned, the others right-aligned."""
    align = ["---" if i < left else "---:" for i in range(len(header))]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"] + \
        ["| " + " | ".join(row) + " |" for row in rows] + [""]


def int_text(value: float | None) -> str:
    return "—" if value is None else f"{round(value):,}"


def seconds_text(value: float) -> str:
    return f"{value:,.0f} s" + (f" ({value / 3600:.1f} h)" if value >= 3600 else "")


def not_comparable(item: PlannedRun) -> bool:
    """A result line made with another recipe (stale), or before the lr it should use was decided (waiting)."""
    return item.record is not None and item.status in ("stale", "waiting")


def last_value(points: list[Any]) -> Any:
    """The value of a curve's last point (None for an empty or malformed curve)."""
    return points[-1][1] if points and isinstance(points[-1], (list, tuple)) and len(points[-1]) >= 2 else None


def lr_text(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def grid_words(raw: dict[str, Any]) -> str:
    """``×0.333, ×1, ×3 the recipe lr, + up to 2 lrs beyond an edge the best lands on`` for a grid protocol."""
    factors = raw.get("lr_grid_factors")
    values = sorted(factors or raw.get("lr_grid") or [])
    text = ", ".join(f"×{v:g}" for v in values) + " the recipe lr" if factors else \
        "lr " + ", ".join(f"{v:g}" for v in values)
    extend = int(raw.get("lr_grid_extend") or 0)
    if extend:
        text += f", + up to {extend} lr(s) beyond an edge the best lands on"
    return text


def machine_of(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """The machine that finished a run and the kernels of its bf16 products (None where not recorded)."""
    from ...hardware import summary as hardware_summary

    hardware = record.get("hardware")
    return (hardware_summary(hardware) if isinstance(hardware, dict) else None, record.get("bf16_matmuls"))
