"""Registration speed, session 19b: the correlations' transforms through the public ``scipy.fft``.

- ``scipy.fft`` is imported on the estimate's first transform or, from its start, on a
  background thread (its import overlaps the coarse reads); the module itself imports
  neither (tests/test_registration_speed_s19_reads.py checks that and the transforms'
  bit-identity with ``scipy.fft.rfftn`` / ``irfftn``);
- a 2-D and a 3-D estimate give the same shifts and qualities whether ``scipy.fft`` was
  loaded before or by the background import.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import txmdb.analysis.registration as reg
from txmdb.synthetic.drift import ALL_DIFFICULTIES, drifted_stack

_ESTIMATE = """
import sys, threading, numpy as np
{preload}
import txmdb.analysis.registration as reg
from txmdb.synthetic.drift import ALL_DIFFICULTIES, drifted_stack
d = drifted_stack({shape}, n_energies=10, seed=2, max_drift=4.0, **ALL_DIFFICULTIES)
started = []
real = threading.Thread.start
def start(self):
    started.append(self.name)
    real(self)
threading.Thread.start = start
s, q = reg.estimate_shifts(lambda i, w: reg.read_window(d.stack, i, w), 10, d.reference_index,
                           shape=d.stack.shape[1:], max_shift=min(d.stack.shape[1:]) / 4)
np.save(sys.argv[1], np.c_[s, q])
print(started.count("txmdb-fft-import"), "scipy.fft" in sys.modules)
"""


def _run(tmp_path, shape, preload: bool):
    out = tmp_path / f"{len(shape)}d_{preload}.npy"
    code = _ESTIMATE.format(preload="import scipy.fft" if preload else "", shape=shape)
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, check=True)
    return done.stdout.split(), np.load(out)


@pytest.mark.parametrize("shape", [(64, 72), (40, 44, 48)], ids=["2d", "3d"])
def test_background_import_gives_the_preloaded_estimate(tmp_path, shape):
    printed, background = _run(tmp_path, shape, preload=False)
    assert printed == ["1", "True"]                   # imported once, on the background thread
    printed, preloaded = _run(tmp_path, shape, preload=True)
    assert printed == ["0", "True"]                   # already loaded: no thread
    assert np.array_equal(background, preloaded)
    d = drifted_stack(shape, n_energies=10, seed=2, max_drift=4.0, **ALL_DIFFICULTIES)
    good = background[:, -1] >= reg.QUALITY_THRESHOLD
    assert good.sum() >= 8
    err = background[good, :-1] - d.shifts[good]
    assert np.sqrt((err ** 2).mean(axis=0)).max() < 0.15
