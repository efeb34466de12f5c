"""A flat spectrum (step zero everywhere; XAS ingestion allows a jump of 0) made the compiled
edge kernel raise ZeroDivisionError inside its parallel region, which numba returned as a
SystemError traceback from ``xas ingest`` (found by tests/test_hostile.py in session 25)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.test_hostile import check_clean_outcome, lab  # noqa: F401 - lab: the fixture
from tests.test_spectral_kernels import E, F, PARAMS, REFS, W
from txmdb.analysis.edge import EdgeKernel
from txmdb.analysis.spectral import SpectralKernel

FLAT_PARAMS = replace(PARAMS, min_jump=0.0)


@pytest.mark.parametrize("level", [0.0, 1.5])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_flat_spectrum_is_masked_not_raised(level, threads):
    mu = np.full((len(E), 3, 7), level, dtype=np.float32)
    mu[:, 0, 0] = np.linspace(0.0, 1.0, len(E))          # one voxel with a step, the rest flat
    result = EdgeKernel(E, FLAT_PARAMS)(mu, threads=threads)
    assert not result.valid[1:].any() and np.isnan(result.edge_ev[1:]).all()
    assert (np.abs(result.jump[1:]) < 1e-12).all()
    kernel = SpectralKernel(E, FLAT_PARAMS, white_line=W, references={k: REFS[k] for k in ("low", "high")},
                            lcf_window=F)
    fused = kernel.with_edges(mu, threads=threads)
    np.testing.assert_array_equal(fused.valid, result.valid)
    for name, values in fused.maps.items():
        assert np.isnan(values[1:]).all(), name


def test_xas_ingest_of_a_flat_spectrum_is_one_line(lab, tmp_path):
    energies = np.linspace(8253.0, 8483.0, 60)
    path = tmp_path / "flat.xdi"
    path.write_text("\n".join(["# energy i0 itrans", *(f"{float(x)!r} 1.0 1.0" for x in energies), "# end of scan"]))
    args = ["xas", "ingest", path, "--sample", "S", "--edge", "Ni-K", "--mode", "transmission"]
    check_clean_outcome(lab, args, path)                 # one line naming the file, nothing stored
    result = lab(*args)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (f"error: {path}: no half-height crossing of the edge in the edge window 8325–8365 eV "
                             "(or the edge jump is too small)\n")
