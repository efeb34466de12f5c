"""Analysis kernels: pure functions of arrays, no catalogue and no files."""

import os as _os

# numba's OpenMP threads spin on their cores for a while after each parallel region; between
# two slabs a core is the reader's or the writer's, and a spinning kernel thread took it
# from them (every compiled pass here). Waiting passively gives it back. A user's own
# setting stands; libgomp reads it when numba first starts its threads, after this import.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
