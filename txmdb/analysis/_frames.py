"""Small helpers shared by the statistics kernels: group reductions and table building.

Every statistics table of the catalogue (``txmdb.db.models.STATISTICS_TABLES``) has a
nullable ``particle`` column: the particle label, or NULL for the whole scan. The kernels
build their DataFrames with pandas' nullable ``Int64`` dtype for it (``<NA>`` = whole
scan), and NaN in float columns for SQL NULL.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["particle_column", "frame", "grouped_mean_std", "group_bincount"]


def particle_column(labels: np.ndarray) -> pd.arrays.IntegerArray:
    """Nullable ``Int64`` particle labels from an int array where 0 stands for the whole scan."""
    arr = np.asarray(labels, dtype=np.int64)
    return pd.arrays.IntegerArray(arr, arr == 0)


def frame(columns: dict[str, object], order: Sequence[str]) -> pd.DataFrame:
    """DataFrame with exactly the columns ``order`` (the model's columns minus ids)."""
    missing = set(order) - set(columns)
    extra = set(columns) - set(order)
    if missing or extra:  # programming error: the kernels and the models disagree
        raise AssertionError(f"table columns mismatch: missing {sorted(missing)}, extra {sorted(extra)}")
    return pd.DataFrame({name: columns[name] for name in order})


def group_bincount(key: np.ndarray, n_keys: int, weights: np.ndarray | None = None) -> np.ndarray:
    """``np.bincount`` with a fixed length (int64 counts, or float64 sums with weights)."""
    out = np.bincount(key, weights=weights, minlength=n_keys)
    return out[:n_keys]


def grouped_mean_std(key: np.ndarray, values: np.ndarray, n_keys: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and population std (ddof=0) of ``values`` per integer ``key``.

    Two passes (mean first, then the squared deviations from each group's own mean):
    edge energies sit near 8.3 keV with spreads of a few eV, so the one-pass
    ``E[x²] − E[x]²`` would lose most of float64's digits to cancellation.

    Parameters
    ----------
    key : ndarray of int, shape (n,)
        Group of each value, ``0 <= key < n_keys``.
    values : ndarray of float, shape (n,)
    n_keys : int

    Returns
    -------
    count : ndarray of int64, shape (n_keys,)
    mean, std : ndarray of float64, shape (n_keys,)
        NaN for empty groups.
    """
    values = np.asarray(values, dtype=np.float64)
    count = group_bincount(key, n_keys)
    total = group_bincount(key, n_keys, values)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        dev = values - mean[key]
        var = group_bincount(key, n_keys, dev * dev) / count
    return count, mean, np.sqrt(var)
