"""The maps of an analysis (DESIGN §11): names, where each lives in the results file, units.

This module is the one place that knows them. A map is named ``edge``, ``white_line``,
``white_line_height``, ``fraction:NAME`` (one per LCF reference), ``rfactor`` or
``cluster``; in the results HDF5 file (:mod:`txmdb.pipeline`)::

    edge               /edge_ev             float32 (spatial)      eV, NaN where masked
    white_line         /white_line_ev       float32 (spatial)      eV, NaN where masked
    white_line_height  /white_line_height   float32 (spatial)      dimensionless (normalised μ)
    fraction:NAME      /fractions[k]        float32 (k, spatial)   dimensionless; attr ``references``
                                                                   = JSON list of the k names
    rfactor            /rfactor             float32 (spatial)      dimensionless
    cluster            /cluster             int16 (spatial)        a label, −1 where masked

:func:`read_map` reads a whole map or one slice of it (only that slice is read from the
file), :func:`map_slabs` streams it slab by slab; both give float32 with NaN where the map
is masked (cluster labels too: −1 becomes NaN). The gradient of a map is in its unit per nm,
or per voxel when the voxel size is unknown (:func:`gradient_unit`). :func:`map_summaries`
is the kernel of the ``map_summaries`` table.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from collections.abc import Mapping
from typing import TYPE_CHECKING, Iterable, Iterator

from txmdb.errors import InputError, ParameterError
from txmdb.vocabulary import MAP_NAMES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["MapSpec", "FRACTION", "MAP_NAMES", "UNITS", "parse_map", "parse_map_list", "gradient_unit",
           "maps_in", "read_map", "ResultMaps", "map_slabs", "map_summaries", "MAP_SUMMARY_QUANTILES"]

#: Prefix of the fraction maps: ``fraction:NAME`` for each LCF reference NAME.
FRACTION = "fraction:"
#: Unit words of the maps' values.
UNITS = ("eV", "dimensionless", "label")

# name → (data set, unit); fractions are rows of one data set and are handled apart.
_FIXED = {
    "edge": ("edge_ev", "eV"),
    "white_line": ("white_line_ev", "eV"),
    "white_line_height": ("white_line_height", "dimensionless"),
    "rfactor": ("rfactor", "dimensionless"),
    "cluster": ("cluster", "label"),
}
_FRACTIONS = "fractions"
#: Percentiles of the map summaries, as their columns name them.
MAP_SUMMARY_QUANTILES = {"p05": 0.05, "p50": 0.50, "p95": 0.95}


@dataclass(frozen=True)
class MapSpec:
    """One map: its name, data set, unit, and for a fraction its reference.

    Attributes
    ----------
    name : str
    dataset : str
        Data set of the results file.
    unit : str
        One of ``UNITS``.
    reference : str, optional
        The LCF reference of a ``fraction:NAME`` map (a row of ``/fractions``).
    """

    name: str
    dataset: str
    unit: str
    reference: str | None = None

    @property
    def has_gradient(self) -> bool:
        """Whether the gradient statistics apply (labels have no gradient)."""
        return self.unit != "label"


def parse_map(name: str) -> MapSpec:
    """The map called ``name``; an unknown name is a ParameterError naming the map names."""
    text = str(name).strip()
    if text in _FIXED:
        dataset, unit = _FIXED[text]
        return MapSpec(text, dataset, unit)
    if text.startswith(FRACTION) and text[len(FRACTION):].strip():
        reference = text[len(FRACTION):].strip()
        return MapSpec(f"{FRACTION}{reference}", _FRACTIONS, "dimensionless", reference)
    raise ParameterError("map", f"map {name!r} does not exist; maps: {', '.join(MAP_NAMES)}")


def parse_map_list(text: str | Iterable[str]) -> tuple[str, ...]:
    """``edge,white_line,fraction:NiO`` (or a sequence) → canonical names, in order, once each."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for part in parts:
        if str(part).strip():
            spec = parse_map(part)
            if spec.name not in names:
                names.append(spec.name)
    if not names:
        raise ParameterError("map", f"no map named in {text!r}; maps: {', '.join(MAP_NAMES)}")
    return tuple(names)


def gradient_unit(name: str, voxel_size_nm: float | None) -> str:
    """Unit of the gradient of map ``name``: eV/nm, eV/voxel, 1/nm or 1/voxel."""
    spec = parse_map(name)
    if not spec.has_gradient:
        raise ParameterError("map", f"map {spec.name!r} holds labels: it has no gradient")
    per = "nm" if voxel_size_nm and math.isfinite(voxel_size_nm) else "voxel"
    return f"eV/{per}" if spec.unit == "eV" else f"1/{per}"


# ------------------------------------------------------------------------------ results files
def _filename(results) -> str:
    return getattr(getattr(results, "file", None), "filename", "the results file")


def _references(group) -> list[str]:
    """The reference names of ``/fractions``; a file whose attribute is no JSON list of
    distinct names (a results file edited by hand) is an InputError, not a crash."""
    raw = group[_FRACTIONS].attrs.get("references", "[]")
    try:
        names = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (TypeError, ValueError, UnicodeDecodeError):
        names = None
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names) and len(set(names)) == len(names)):
        raise InputError(_filename(group), "the 'references' attribute of /fractions is not a JSON list of "
                                           "distinct reference names")
    return names


def maps_in(results) -> tuple[str, ...]:
    """Names of the maps a results file holds, in ``MAP_NAMES`` order.

    ``results`` is an open h5py File/Group (e.g. the one being written) or a path.
    """
    if isinstance(results, (str, os.PathLike)):
        with _open(results) as f:
            return maps_in(f)
    names = []
    for name, (dataset, _) in _FIXED.items():
        if name == "rfactor" and _FRACTIONS in results:   # fractions sit before the R-factor
            names.extend(f"{FRACTION}{r}" for r in _references(results))
        if dataset in results:
            names.append(name)
    return tuple(names)


def _open(path):
    import h5py

    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the results file: {exc}") from None


def _locate(results, name: str) -> tuple[object, int | None]:
    """The data set of map ``name`` in open ``results`` and, for a fraction, its row."""
    import h5py

    spec = parse_map(name)
    available = maps_in(results)
    if spec.name not in available:
        raise InputError(_filename(results), f"map {spec.name!r} does not exist in this analysis; its maps: "
                                             f"{', '.join(available) or 'none'}")
    ds = results[spec.dataset]
    row = _references(results).index(spec.reference) if spec.reference is not None else None
    # what the pipeline writes: a numeric data set of 2 or 3 spatial axes (after the row axis of
    # the fractions, one row per reference); anything else is a damaged file, named in one line
    rows = () if row is None else (len(_references(results)),)
    if not (isinstance(ds, h5py.Dataset) and ds.dtype.kind in "fiu" and len(ds.shape) - len(rows) in (2, 3)
            and tuple(ds.shape[:len(rows)]) == rows):
        raise InputError(_filename(results), f"data set /{spec.dataset} of map {spec.name!r} is not a numeric "
                                             f"map of 2 or 3 axes{' with one row per reference' if rows else ''}")
    return ds, row


def _as_float(block, spec: MapSpec):
    import numpy as np

    if spec.unit == "label":
        out = block.astype(np.float32)
        out[block < 0] = np.nan
        return out
    return block.astype(np.float32, copy=False)


def read_map(results, name: str, index: int | None = None, axis: int = 0) -> "np.ndarray":
    """Map ``name`` of a results file, whole or one slice, float32 with NaN where masked.

    Parameters
    ----------
    results : path or open h5py File/Group
    name : str
        A map name (``MAP_NAMES``).
    index : int, optional
        Read only the slice ``index`` along spatial ``axis`` (a 3-D map gives a 2-D image);
        None reads the whole map.
    axis : int
        Spatial axis of the slice (0 = z in 3-D, y in 2-D).

    Raises
    ------
    ParameterError
        ``name`` is no map name.
    InputError
        The file does not hold that map (the message lists the maps it holds), or ``index``
        or ``axis`` lies outside the map.
    """
    if isinstance(results, (str, os.PathLike)):
        with _open(results) as f:
            return read_map(f, name, index, axis)
    spec = parse_map(name)
    ds, row = _locate(results, spec.name)
    spatial = ds.shape[1:] if row is not None else ds.shape
    selection: list = [slice(None)] * len(spatial)
    if index is not None:
        if not 0 <= axis < len(spatial):
            raise InputError(ds.file.filename, f"map {spec.name!r} has {len(spatial)} axes; no axis {axis}")
        if not -spatial[axis] <= index < spatial[axis]:
            raise InputError(ds.file.filename, f"map {spec.name!r} has {spatial[axis]} slices along axis "
                                               f"{axis}; no slice {index}")
        selection[axis] = int(index)
    if row is not None:
        selection.insert(0, row)
    try:
        block = ds[tuple(selection)]
    except OSError as exc:                       # a damaged chunk (or filter) of the file
        raise InputError(ds.file.filename, f"cannot read map {spec.name!r}: {exc}") from None
    return _as_float(block, spec)


def map_slabs(results, name: str, rows: int) -> Iterator[tuple[int, int, "np.ndarray"]]:
    """``(start, stop, block)`` of map ``name`` along its first axis, ``rows`` slices at a time.

    ``results`` must be an open h5py File/Group; blocks are as :func:`read_map` gives them.
    """
    spec = parse_map(name)
    ds, row = _locate(results, spec.name)
    n = ds.shape[1] if row is not None else ds.shape[0]
    for start in range(0, n, max(1, int(rows))):
        stop = min(start + max(1, int(rows)), n)
        block = ds[row, start:stop] if row is not None else ds[start:stop]
        yield start, stop, _as_float(block, spec)


class ResultMaps(Mapping):
    """The maps of an open results file by name, each read whole (float32, NaN where masked)
    when asked for: the statistics phase holds one at a time."""

    def __init__(self, results):
        self._results = results

    def __getitem__(self, name: str) -> "np.ndarray":
        if name not in self:
            raise KeyError(name)
        return read_map(self._results, name)

    def __iter__(self) -> Iterator[str]:
        return iter(maps_in(self._results))

    def __len__(self) -> int:
        return len(maps_in(self._results))

    def __contains__(self, name: object) -> bool:
        return name in maps_in(self._results)


def map_shape(results, name: str) -> tuple[int, ...]:
    """Spatial shape of map ``name`` in open ``results``."""
    ds, row = _locate(results, name)
    return tuple(ds.shape[1:] if row is not None else ds.shape)


# ------------------------------------------------------------------------------ summaries
def _pooled(count, mean, std) -> tuple[int, float, float]:
    """Count, mean and population std of the union of groups from theirs (each group's squared
    deviations are about its own mean, so no digits are lost to cancellation)."""
    import numpy as np

    total = int(count.sum())
    if not total:
        return 0, np.nan, np.nan
    has = count > 0
    c, m, s = count[has].astype(np.float64), mean[has], std[has]
    grand = float((c * m).sum() / total)
    return total, grand, float(np.sqrt((c * (s * s + (m - grand) ** 2)).sum() / total))


def _quantiles(values: "np.ndarray", qs) -> "np.ndarray":
    """numpy's linear-interpolation quantiles of ``values`` (partitioned in place), in float64
    whatever the values' dtype: the order statistics are found in the map's own precision."""
    import numpy as np

    out = np.full(len(qs), np.nan)
    if not values.size:
        return out
    pos = [q * (values.size - 1) for q in qs]
    kth = sorted({int(np.floor(p)) for p in pos} | {min(int(np.floor(p)) + 1, values.size - 1) for p in pos})
    values.partition(kth)
    for i, p in enumerate(pos):
        lo = int(np.floor(p))
        a, b = float(values[lo]), float(values[min(lo + 1, values.size - 1)])
        out[i] = a + (b - a) * (p - lo)
    return out


def _compiled_summary():
    """``txmdb.analysis._summary_numba``, or None without numba (the numpy path then)."""
    try:
        from txmdb.analysis import _summary_numba
    except ImportError:
        return None
    return _summary_numba


def map_summaries(labels: "np.ndarray", n: int, maps: Iterable[tuple[str, "np.ndarray"]], *,
                  known: dict | None = None) -> "pd.DataFrame":
    """n_valid, mean, population std and 5/50/95th percentiles of each map, whole scan and per particle.

    Parameters
    ----------
    labels : ndarray of int
        Particle labels, 0 outside particles.
    n : int
        Number of particles.
    maps : iterable of (name, ndarray)
        Each map, same shape as ``labels``, NaN where masked.
    known : dict, optional
        ``{name: (count, mean, std)}``, arrays of shape (n + 1,) (row 0: whole scan), for maps
        whose moments are already computed and that are finite in every particle voxel (the
        edge map's from :func:`txmdb.analysis.particles.particle_moments`).

    Returns
    -------
    DataFrame
        Columns ``particle`` (<NA> = the whole scan), ``map``, ``n_valid``, ``mean``, ``std``,
        ``p05``, ``p50``, ``p95``: over the particle voxels where the map is finite
        (percentiles by numpy's default linear interpolation); NaN for a group without
        such voxels. Per map, the whole scan first, then particles 1..n.
    """
    import numpy as np
    import pandas as pd

    from txmdb.analysis._frames import grouped_moments, particle_column
    from txmdb.analysis.gradient import _group_quantiles

    qs = tuple(MAP_SUMMARY_QUANTILES.values())
    compiled = _compiled_summary()
    inside = labels.reshape(-1)
    where = keys = None
    parts = []
    for name, values in maps:
        flat = np.asarray(values).reshape(-1)
        if compiled is not None:            # one pass over the arrays, no index arrays
            count, mean, std, val, key = compiled.particle_values(inside, flat, n, n > 1)
        else:
            if where is None:
                where = np.flatnonzero(inside)  # particle voxels, once for every map
                keys = inside[where]
            v = flat[where]
            ok = np.isfinite(v)
            key, val = (keys, v) if ok.all() else (keys[ok], v[ok])
            (count, mean, std), = grouped_moments(key, val.astype(np.float64), [(lambda i, k=key: k[i], n + 1)])
        if known and name in known and count[1:].sum() == (np.asarray(known[name][0])[1:]).sum():
            count, mean, std = (np.array(a) for a in known[name])
        else:
            count[0], mean[0], std[0] = _pooled(count[1:], mean[1:], std[1:])
        if compiled is not None:  # O(n) selection on value histograms, in the map's own precision
            quant = compiled.group_order_statistics(key if n > 1 else key[:0], val, n, np.asarray(qs))
        else:
            quant = _group_quantiles(key, val.astype(np.float64), n + 1, qs) if n > 1 else \
                np.empty((len(qs), n + 1))
            quant[:, 0] = _quantiles(val, qs)
        if n == 1:                                      # one particle: its quantiles are the scan's
            quant[:, 1] = quant[:, 0]
        groups = np.arange(n + 1)
        parts.append(pd.DataFrame({
            "particle": particle_column(groups), "map": name, "n_valid": count.astype(np.int64),
            "mean": mean, "std": std, **{c: quant[i] for i, c in enumerate(MAP_SUMMARY_QUANTILES)}}))
    columns = ["particle", "map", "n_valid", "mean", "std", *MAP_SUMMARY_QUANTILES]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
