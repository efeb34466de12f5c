"""Comparison reports: the figures of Xu et al. 2020 for any set of samples, as one HTML file.

``build_report`` is imported lazily so that ``import txmdb.report`` stays cheap; matplotlib
is only imported when figures are drawn.
"""

from __future__ import annotations

__all__ = ["build_report"]


def __getattr__(name: str):
    if name == "build_report":
        from txmdb.report.html import build_report

        return build_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
