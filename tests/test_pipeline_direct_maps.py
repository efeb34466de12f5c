"""The edge pass' maps as pipeline.DirectMaps writes them (os.pwrite at each data set's place in
the results file, not through h5py): every map of the file equals the kernel's map of the
whole stack computed in one go, for slabs that do not divide the stack, and a slab that does
not fit its map is refused."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from txmdb.analysis.edge import edge_parameters
from txmdb.analysis.spectral import SpectralKernel
from txmdb.catalog.spectroscopy import ReferenceSpectrum
from txmdb.io.hdf5 import open_stack, read_slab
from txmdb.io.spectra import read_spectrum
from txmdb.pipeline import AnalysisOptions, DirectMaps, analyze_stack
from txmdb.synthetic.tomogram import SyntheticStack, energy_grid, particle_field, write_stack

PARAMS = edge_parameters("Ni")
DATA = Path(__file__).parent / "data" / "xas"
W, F = (8345.0, 8358.0), (8325.0, 8375.0)


def _reference(name: str, number: int) -> ReferenceSpectrum:
    spectrum = read_spectrum(DATA / f"ref_{name}.txt")
    return ReferenceSpectrum(name, number, np.asarray(spectrum.energy_ev), np.asarray(spectrum.mu))


@pytest.mark.parametrize("slab", [1, 7])
def test_file_maps_equal_the_kernels_maps_of_the_whole_stack(tmp_path, slab):
    edge, _ = particle_field((17, 24, 24), kind="rod", n_particles=1, seed=3, radius=7.0)
    write_stack(tmp_path / "s.h5", SyntheticStack(edge, energy_grid(60), noise=0.01, seed=3), energy_grid(60),
                voxel_size_nm=30.0)
    info = open_stack(tmp_path / "s.h5")
    refs = (_reference("NiO", 1), _reference("LiNiO2", 2))
    options = AnalysisOptions(params=PARAMS, slab_size=slab, white_line=W, lcf=refs, lcf_window=F)
    analyze_stack(info, options, results_path=tmp_path / "r.h5")

    kernel = SpectralKernel(info.energies_ev, PARAMS, white_line=W, lcf_window=F,
                            references={r.name: (r.energy_ev, r.mu) for r in refs})
    whole = kernel.with_edges(read_slab(info, 0, info.n_slices))
    expected = {"edge_ev": whole.edge_ev, "jump": whole.jump, "white_line_ev": whole.maps["white_line"],
                "white_line_height": whole.maps["white_line_height"], "rfactor": whole.maps["rfactor"]}
    with h5py.File(tmp_path / "r.h5") as f:
        for name, values in expected.items():
            assert f[name].chunks is None and f[name].dtype == np.float32, name
            np.testing.assert_array_equal(f[name][...], values.astype(np.float32), err_msg=name)
        np.testing.assert_array_equal(f["valid"][...], whole.valid)
        assert f["fractions"].attrs["references"] == '["NiO", "LiNiO2"]'
        for row, name in enumerate(("NiO", "LiNiO2")):
            np.testing.assert_array_equal(f["fractions"][row], whole.maps[f"fraction:{name}"].astype(np.float32))
        assert np.isfinite(f["edge_ev"][...]).any() and np.isnan(f["edge_ev"][...]).any()


def test_a_slab_that_does_not_fit_is_refused(tmp_path):
    with h5py.File(tmp_path / "r.h5", "w") as out:
        maps = DirectMaps(out, tmp_path / "r.h5")
        try:
            maps.create("m", (4, 3, 2), np.float32)
            maps.write("m", 2, np.ones((2, 3, 2)))
            with pytest.raises(ValueError, match="does not fit"):
                maps.write("m", 3, np.ones((2, 3, 2)))
            with pytest.raises(ValueError, match="does not fit"):
                maps.write("m", 0, np.ones((1, 2, 2)))
        finally:
            maps.close()
    with h5py.File(tmp_path / "r.h5") as f:
        np.testing.assert_array_equal(f["m"][2:], 1.0)
