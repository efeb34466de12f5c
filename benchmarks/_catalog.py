"""A fresh SQLite catalogue with one sample, for the benchmarks."""

from __future__ import annotations

import shutil
from pathlib import Path


def fresh_catalog(work: Path, sample: str = "rod"):
    from txmdb.catalog import open_catalog
    from txmdb.catalog.samples import add_sample
    from txmdb.db.migrate import upgrade

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    catalog = open_catalog(f"sqlite:///{work / 'catalogue.db'}", work / "store", check=False)
    upgrade(catalog.engine)
    with catalog.session() as session:
        add_sample(session, sample)
    return catalog
