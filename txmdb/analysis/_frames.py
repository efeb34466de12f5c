"""Small helpers shared by the statistics kernels: group reductions and table building.

Every statistics table of the catalogue (``txmdb.db.models.STATISTICS_TABLES``) has a
nullable ``particle`` column: the particle label, or NULL for the whole scan. The kernels
build their DataFrames with pandas' nullable ``Int64`` dtype for it (``<NA>`` = whole
scan), and NaN in float columns for SQL NULL.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from txmdb.db.models import STATISTICS_TABLES, data_columns

__all__ = ["ROW_LABELS", "particle_column", "table_columns", "frame", "flat_chunks", "grouped_moments", "CHUNK"]


#: Columns the pipeline adds to every kernel's table (which map, and the unit of its |u| values):
#: a kernel computes on one map and knows neither.
ROW_LABELS = ("map", "gradient_unit")


def table_columns(table: str) -> tuple[str, ...]:
    """Columns of a kernel's DataFrame for catalogue table ``table``: the model's, declared once
    there, without the ``ROW_LABELS`` the pipeline adds."""
    return tuple(c for c in data_columns(STATISTICS_TABLES[table]) if c not in ROW_LABELS)


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


# Flat chunk of voxels processed at once by the chunked reductions: bounds the int64 and
# float64 temporaries to a few tens of MB whatever the size of the map.
CHUNK = 1 << 22


def flat_chunks(size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(size)``, ``CHUNK`` long."""
    for start in range(0, size, CHUNK):
        yield slice(start, min(start + CHUNK, size))


def grouped_moments(labels: np.ndarray, values: np.ndarray,
                    keyings: Sequence[tuple[Callable[[np.ndarray], np.ndarray], int]]
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Count, mean and population std (ddof = 0) of ``values`` over the particle voxels.

    The voxels with ``labels > 0`` are grouped once per keying; a keying is
    ``(key_of, n_keys)`` with ``key_of(flat_indices)`` giving each voxel's group in
    ``0..n_keys-1``. The map is walked in flat chunks (bounded temporaries), twice: sums
    first, then the squared deviations from each group's own mean — edge energies sit
    near 8.3 keV with spreads of a few eV, so the one-pass ``E[x²] − E[x]²`` would lose
    most of float64's digits to cancellation.

    Parameters
    ----------
    labels : ndarray of int
        Particle labels, 0 outside particles.
    values : ndarray of float, same shape
    keyings : sequence of (callable, int)

    Returns
    -------
    list of (count int64, mean float64, std float64), one per keying, each of shape
    (n_keys,); NaN mean/std for empty groups.
    """
    lab = labels.reshape(-1)
    val = values.reshape(-1)
    counts = [np.zeros(n, dtype=np.int64) for _, n in keyings]
    sums = [np.zeros(n) for _, n in keyings]
    for sl in flat_chunks(lab.size):
        idx = np.flatnonzero(lab[sl]) + sl.start
        v = val[idx].astype(np.float64, copy=False)
        for (key_of, n), c, t in zip(keyings, counts, sums):
            k = key_of(idx)
            c += np.bincount(k, minlength=n)[:n]
            t += np.bincount(k, weights=v, minlength=n)[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = [t / c for t, c in zip(sums, counts)]
    squares = [np.zeros(n) for _, n in keyings]
    for sl in flat_chunks(lab.size):
        idx = np.flatnonzero(lab[sl]) + sl.start
        v = val[idx].astype(np.float64, copy=False)
        for (key_of, n), m, q in zip(keyings, means, squares):
            k = key_of(idx)
            dev = v - m[k]
            q += np.bincount(k, weights=dev * dev, minlength=n)[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        return [(c, m, np.sqrt(q / c)) for c, m, q in zip(counts, means, squares)]
