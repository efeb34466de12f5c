"""The fused spectral pass writing into reused output buffers (``SpectralKernel.with_edges(out=)``,
``MapBuffers``): float32 maps bit for bit ``astype(np.float32)`` of the float64 maps, the same
numbers whatever the slab size and the buffers' history, edge results unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_spectral_kernels import E, F, PARAMS, REFS, W, mixtures
from tests.test_spectral_speed_kernel import measured_references
from txmdb.analysis.spectral import MapBuffers, SpectralKernel
from txmdb.synthetic.tomogram import SyntheticStack, particle_field


def _bits(a: np.ndarray) -> np.ndarray:
    """The float32 values as their bit patterns (NaN payloads and signs of zero included)."""
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _rod_slab():
    """A slab of the benchmark's kind of stack: a rod, 60 energies, noise 0.01, particle and background."""
    edge_map, _ = particle_field((40, 40, 40), kind="rod", seed=1, radius=0.48 * 40)
    return SyntheticStack(edge_map, E, noise=0.01, seed=2).slab(17, 23)


def test_float32_buffers_are_the_float64_maps_rounded_bit_for_bit():
    """The benchmark's case (white line, two measured references, rod slab): each map written
    as float32 by the kernel has the bits of ``astype(np.float32)`` of the float64 map, and the
    edge results are those of the pass without buffers."""
    mu = _rod_slab()
    kernel = SpectralKernel(E, PARAMS, white_line=W, references=measured_references(), lcf_window=F)
    fresh = kernel.with_edges(mu)
    buffers = kernel.map_buffers()
    into = kernel.with_edges(mu, out=buffers)
    assert set(into.maps) == set(fresh.maps) == set(kernel.map_names)
    for name, values in into.maps.items():
        assert values.dtype == np.float32 and values.shape == mu.shape[1:], name
        np.testing.assert_array_equal(_bits(values), _bits(fresh.maps[name].astype(np.float32)), err_msg=name)
        assert np.isnan(values[~fresh.valid]).all(), name
    assert np.isfinite(into.maps["white_line"]).sum() > 100          # found where the particle is
    assert 0.3 < fresh.valid.mean() < 0.95
    for field in ("edge_ev", "jump", "sigma_pre", "valid"):
        np.testing.assert_array_equal(getattr(into, field), getattr(fresh, field), err_msg=field)


@pytest.mark.parametrize("white_line, names", [
    (W, ("low", "high")),
    (W, ("low",)),                       # one reference
    (None, ("low", "high", "broad")),    # three references: the general support search
    (W, ()),                             # white line only
])
def test_buffers_equal_the_fresh_maps_for_every_kind_of_kernel(white_line, names):
    rng = np.random.default_rng(11)
    mu = mixtures(rng, ("low", "high"), 3 * 5 * 90).reshape(len(E), 3, 5, 90).astype(np.float32)
    mu[:, 0, 0, :7] *= 0.01                                  # masked voxels among valid ones
    kernel = SpectralKernel(E, PARAMS, white_line=white_line, references={n: REFS[n] for n in names} or None,
                            lcf_window=F if names else None)
    fresh = kernel.with_edges(mu).maps
    for dtype in (np.float32, np.float64):
        into = kernel.with_edges(mu, out=kernel.map_buffers(dtype)).maps
        for name in kernel.map_names:
            assert into[name].dtype == dtype
            np.testing.assert_array_equal(into[name], fresh[name].astype(dtype), err_msg=name)
    assert np.isnan(fresh[kernel.map_names[0]][0, 0, :7]).all()


def test_reused_buffers_give_every_slab_its_own_maps_whatever_the_slab_sizes():
    """Slabs of 1, 4 and 2 slices through one set of buffers (grown once, then reused): each
    slab's maps equal those of the whole stack computed at once; a slab's maps are views of the
    buffers, overwritten by the next slab (so a consumer takes them before the next call)."""
    mu = _rod_slab()
    kernel = SpectralKernel(E, PARAMS, white_line=W, references=measured_references(), lcf_window=F)
    whole = kernel.with_edges(mu).maps
    buffers = kernel.map_buffers()
    bounds = [(0, 1), (1, 5), (5, 6)]
    seen = []
    for a, b in bounds:
        maps = kernel.with_edges(mu[:, a:b], out=buffers).maps
        for name in kernel.map_names:
            np.testing.assert_array_equal(_bits(maps[name]), _bits(whole[name][a:b].astype(np.float32)),
                                          err_msg=f"{name} slices {a}:{b}")
        seen.append({name: values.copy() for name, values in maps.items()})
        last = maps
    first = kernel.with_edges(mu[:, 0:1], out=buffers).maps
    for name in kernel.map_names:
        # the last slab's maps were overwritten in place by this call; its copy was not
        assert np.shares_memory(first[name], last[name]), name
        np.testing.assert_array_equal(_bits(last[name]), _bits(whole[name][0:1].astype(np.float32)))
        np.testing.assert_array_equal(_bits(seen[-1][name]), _bits(whole[name][5:6].astype(np.float32)))
    assert not np.array_equal(_bits(seen[0]["white_line"]), _bits(seen[-1]["white_line"]))
    # fractions of different references never share memory
    assert not np.shares_memory(first["fraction:NiO"], first["fraction:LiNiO2"])


def test_buffers_grow_for_a_larger_slab_and_refuse_other_dtypes():
    buffers = MapBuffers(2)
    wl, h, frac, r = buffers.outputs(10)
    assert frac.shape == (2, 10) and frac.flags.c_contiguous and wl.dtype == np.float32
    wl2, _, frac2, _ = buffers.outputs(4)
    assert np.shares_memory(wl, wl2) and frac2.shape == (2, 4) and frac2.flags.c_contiguous
    wl3, _, frac3, _ = buffers.outputs(25)
    assert wl3.shape == (25,) and frac3.shape == (2, 25)
    with pytest.raises(ValueError, match="float32 or float64"):
        MapBuffers(2, np.int32)
