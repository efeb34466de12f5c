"""Every query honours exactly the filters it declares, on SQLite and PostgreSQL.

- a filter a query does not declare is a usage error: one line, exit status 2 (CLI), or
  FilterError (library), never a silently ignored option;
- every declared filter really filters, and several values bind with IN (repeated
  options, comma lists for numbers).

The catalogue is filled row by row through the models (no TXM analysis needed), with
values chosen so that every filter keeps some rows and drops others.
"""

from __future__ import annotations

import json

import pytest

from txmdb import query
from txmdb.errors import FilterError
from txmdb.vocabulary import FILTERS

MORPHOLOGY = {"rod-A": "rod", "rod-B": "rod", "gravel-C": "gravel"}
SAMPLE_STATES = {"rod-A": ("pristine", "charged"), "gravel-C": ("charged",)}  # TXM scans


def _populate(catalog) -> dict:
    """Three samples, three cells with runs, XAS, XRD, three scans with four analyses; returns the ids."""
    from txmdb.catalog.samples import add_cell, add_sample
    from txmdb.db import models as m

    ids: dict = {"run": {}, "scan": {}, "analysis": {}, "registration": {}}
    digest = iter(f"{i:064x}" for i in range(1, 1000))
    with catalog.session() as s:
        for name, morphology in MORPHOLOGY.items():
            add_sample(s, name, morphology=morphology)
        for cell, sample in (("cA1", "rod-A"), ("cA2", "rod-A"), ("cC1", "gravel-C")):
            owner = add_cell(s, cell, sample=sample, active_mass_mg=5.0)
            run = m.CyclingRun(cell_id=owner.id, file_format="csv", n_records=10, n_cycles=3, reference_cycle=2,
                               records_path="r", records_sha256=next(digest), file_path=f"{cell}.csv",
                               file_size_bytes=1, file_sha256=next(digest))
            s.add(run)
            s.flush()
            ids["run"][cell] = run.id
            for cycle, capacity in ((1, 190.0), (2, 200.0), (3, 180.0)):
                s.add(m.Cycle(run_id=run.id, cycle=cycle, discharge_capacity_mah_g=capacity,
                              discharge_capacity_mah=capacity * 5e-3, voltage_drop_v=0.1 * cycle))
        sample_id = {x.name: x.id for x in s.query(m.Sample)}
        for sample, edge, mode, state in (("rod-A", "Ni-K", "transmission", "pristine"),
                                          ("rod-B", "Ni-L3", "TEY", "charged"),
                                          ("gravel-C", "Ni-K", "fluorescence", "charged")):
            s.add(m.XASMeasurement(sample_id=sample_id[sample], edge=edge, mode=mode, state=state, n_points=3,
                                   spectrum_path="x", spectrum_sha256=next(digest), file_path=f"{sample}.xdi",
                                   file_size_bytes=1, file_sha256=next(digest)))
        for sample, state in (("rod-A", "pristine"), ("rod-B", "pristine"), ("gravel-C", "charged")):
            s.add(m.XRDResult(sample_id=sample_id[sample], state=state, i003_i104=1.5))
        for sample, states in SAMPLE_STATES.items():
            for state in states:
                scan = m.TXMScan(sample_id=sample_id[sample], state=state, layout="dxchange", data_path="/d",
                                 energy_path="/e", ndim=3, shape=[2, 4, 4, 4], dtype="float32", n_energies=2,
                                 energy_min_ev=8300.0, energy_max_ev=8400.0, energies_ev=[8300.0, 8400.0],
                                 voxel_size_nm=20.0, file_path=f"{sample}-{state}.h5", file_size_bytes=1,
                                 file_sha256=next(digest))
                s.add(scan)
                s.flush()
                ids["scan"][(sample, state)] = scan.id
                # rod-A's pristine scan was analysed twice: queries read the latest unless --analysis.
                for _ in range(2 if (sample, state) == ("rod-A", "pristine") else 1):
                    analysis = m.Analysis(scan_id=scan.id, status="done", txmdb_version="t", input_sha256="0" * 64,
                                          n_valid_voxels=10, n_particles=2, mean_edge_ev=8340.0, std_edge_ev=1.0)
                    s.add(analysis)
                    s.flush()
                    ids["analysis"].setdefault((sample, state), []).append(analysis.id)
                    _statistics(s, analysis.id)
                    _registration(s, scan.id, ids["registration"].setdefault((sample, state), []))
        # A newer analysis of the gravel scan failed: its statistics stay those of the done one.
        s.add(m.Analysis(scan_id=ids["scan"][("gravel-C", "charged")], status="failed", txmdb_version="t",
                         input_sha256="0" * 64, error="killed"))
    return ids


def _statistics(s, analysis_id: int) -> None:
    """Rows of every statistics table: whole scan and particles 1, 2; binning 1, 2; plain and weighted."""
    from txmdb.db import models as m

    for particle in (None, 1, 2):
        if particle:
            s.add(m.Particle(analysis_id=analysis_id, particle=particle, n_voxels=5, centroid_y=1.0, centroid_x=1.0,
                             equivalent_radius_vox=1.0, mean_edge_ev=8340.0, std_edge_ev=1.0))
        s.add(m.EdgeHistogram(analysis_id=analysis_id, particle=particle, edge_lo_ev=8330.0, edge_hi_ev=8331.0,
                              count=1, probability=0.5))
        s.add(m.DepthProfile(analysis_id=analysis_id, particle=particle, depth_lo_vox=1.0, depth_hi_vox=2.0,
                             n_voxels=3, mean_edge_ev=8340.0, std_edge_ev=1.0))
        for factor in (1, 2):
            for weighted in (False, True):
                s.add(m.ThetaHistogram(analysis_id=analysis_id, particle=particle, bin_factor=factor,
                                       weighted=weighted, theta_lo=0.0, theta_hi=5.0, probability=0.1,
                                       reference=0.1))
            s.add(m.GradientSummary(analysis_id=analysis_id, particle=particle, bin_factor=factor, n_vectors=4,
                                    mean_u=0.5, tangential_excess=1.1))
            s.add(m.VectorSizeStat(analysis_id=analysis_id, particle=particle, bin_factor=factor, phi_lo=0.0,
                                   phi_hi=10.0, n=4, mean_u=0.5))
            s.add(m.VectorSizeHistogram(analysis_id=analysis_id, particle=particle, bin_factor=factor, phi_lo=0.0,
                                        phi_hi=10.0, u_lo=0.0, u_hi=1.0, count=4))
            s.add(m.UThetaProfile(analysis_id=analysis_id, particle=particle, bin_factor=factor, theta_lo=0.0,
                                  theta_hi=5.0, n=4, mean_u=0.5))
        s.add(m.MapSummary(analysis_id=analysis_id, particle=particle, map="edge", n_valid=5, mean=8340.0))
    # a second map, particle 1 only: fewer rows than the edge map has
    _map_statistics(s, analysis_id, "fraction:NiO", particle=1)
    # phase clusters (per analysis, no particles): two clusters at two energies, a 2-component PCA
    for cluster in (0, 1):
        for index, energy in ((0, 8300.0), (1, 8400.0)):
            s.add(m.ClusterSpectrum(analysis_id=analysis_id, cluster=cluster, energy_index=index, energy_ev=energy,
                                    mean_norm=0.5, n_voxels=5))
    for component, ratio in ((1, 0.9), (2, 0.1)):
        s.add(m.PCAVariance(analysis_id=analysis_id, component=component, explained_variance_ratio=ratio))


def _map_statistics(s, analysis_id: int, name: str, *, particle: int) -> None:
    """Rows of map ``name`` in every table that holds statistics of any map."""
    from txmdb.db import models as m

    s.add(m.EdgeHistogram(analysis_id=analysis_id, particle=particle, map=name, edge_lo_ev=0.0, edge_hi_ev=0.1,
                          count=1, probability=0.5))
    s.add(m.DepthProfile(analysis_id=analysis_id, particle=particle, map=name, depth_lo_vox=1.0, depth_hi_vox=2.0,
                         n_voxels=3, mean_edge_ev=0.5, std_edge_ev=0.1))
    for factor in (1, 2):
        for weighted in (False, True):
            s.add(m.ThetaHistogram(analysis_id=analysis_id, particle=particle, map=name, bin_factor=factor,
                                   weighted=weighted, theta_lo=0.0, theta_hi=5.0, probability=0.1, reference=0.1))
        s.add(m.GradientSummary(analysis_id=analysis_id, particle=particle, map=name, bin_factor=factor,
                                n_vectors=4, mean_u=0.01, gradient_unit="1/nm"))
        s.add(m.VectorSizeStat(analysis_id=analysis_id, particle=particle, map=name, bin_factor=factor, phi_lo=0.0,
                               phi_hi=10.0, n=4, mean_u=0.01, gradient_unit="1/nm"))
        s.add(m.VectorSizeHistogram(analysis_id=analysis_id, particle=particle, map=name, bin_factor=factor,
                                    phi_lo=0.0, phi_hi=10.0, u_lo=0.0, u_hi=0.1, count=4, gradient_unit="1/nm"))
        s.add(m.UThetaProfile(analysis_id=analysis_id, particle=particle, map=name, bin_factor=factor, theta_lo=0.0,
                              theta_hi=5.0, n=4, mean_u=0.01, gradient_unit="1/nm"))
    s.add(m.MapSummary(analysis_id=analysis_id, particle=particle, map=name, n_valid=5, mean=0.5))


def _registration(s, scan_id: int, ids: list) -> None:
    """A registration of the scan, two energies (3-D shifts)."""
    from txmdb.db import models as m

    registration = m.Registration(scan_id=scan_id, method="t", reference_index=1, reference_energy_ev=8400.0,
                                  max_shift_vox=1.0, txmdb_version="t", input_sha256="0" * 64)
    registration.shifts = [m.RegistrationShift(energy_index=e, energy_ev=energy, shift_z=0.5 - e, shift_y=0.0,
                                               shift_x=0.0, quality=0.9) for e, energy in enumerate((8300.0, 8400.0))]
    s.add(registration)
    s.flush()
    ids.append(registration.id)


# Per filter: (one value, two values, the test a returned row must pass). Values that name
# catalogue ids are resolved from the populated ids.
def _cases(ids: dict) -> dict:
    rod_a_pristine = ids["analysis"][("rod-A", "pristine")]
    scans = ids["scan"]
    return {
        "sample": (["gravel-C"], ["gravel-C", "rod-A"], lambda r, v: r["sample"] in v),
        "morphology": (["gravel"], ["gravel", "rod"], lambda r, v: MORPHOLOGY[r["sample"]] in v),
        "state": (["pristine"], ["pristine", "charged"], lambda r, v: r["state"] in v),
        "scan": ([scans[("gravel-C", "charged")]], [scans[("gravel-C", "charged")], scans[("rod-A", "charged")]],
                 lambda r, v: r["scan_id"] in v),
        # The older of two analyses: never what a query returns unless asked for.
        "analysis": ([rod_a_pristine[0]], [rod_a_pristine[0], ids["analysis"][("rod-A", "charged")][0]],
                     lambda r, v: r["analysis_id"] in v),
        "particle": ([2], [1, 2], lambda r, v: r["particle"] in v),
        "scan_level": (True, None, lambda r, v: r["particle"] is None),
        "bin": ([2], [1, 2], lambda r, v: r["bin_factor"] in v),
        "weighted": (True, None, lambda r, v: r["weighted"] is True),
        "run": ([ids["run"]["cC1"]], [ids["run"]["cC1"], ids["run"]["cA2"]], lambda r, v: r["run_id"] in v),
        "cycle": ([3], [1, 3], lambda r, v: r["cycle"] in v),
        "cell": (["cA2"], ["cA2", "cC1"], lambda r, v: r["cell"] in v),
        "edge": (["Ni-L3"], ["Ni-L3", "Ni-K"], lambda r, v: r["edge"] in v),
        "mode": (["TEY"], ["TEY", "fluorescence"], lambda r, v: r["mode"] in v),
        # analyses show their own status, scans the status of their newest analysis
        "status": (["failed"], ["failed", "done"], lambda r, v: r.get("status", r.get("latest_status")) in v),
        # statistics tables show the edge map unless --map names others
        "map": (["fraction:NiO"], ["edge", "fraction:NiO"], lambda r, v: r["map"] in v),
        "registration": ([ids["registration"][("rod-A", "pristine")][0]],
                         [ids["registration"][("rod-A", "pristine")][0], ids["registration"][("gravel-C", "charged")][0]],
                         lambda r, v: r["registration_id"] in v),
    }


def _options(name: str, values) -> list[str]:
    """CLI arguments for a filter: a flag, or the option repeated; numbers of several values as one comma list."""
    f = FILTERS[name]
    if f.type is bool:
        return [f.flags[0].split("/")[0 if values else 1]]
    if f.type is int and len(values) > 1:
        return [f.flags[0], ",".join(map(str, values))]
    return [arg for value in values for arg in (f.flags[0], str(value))]


# Query parameters that are not filters (retention needs its cycle).
EXTRA = {"retention": ["--cycle", "3"]}


def _rows(cli, table: str, *args: str) -> list[dict]:
    result = cli("query", table, *EXTRA.get(table, []), *args, "--format", "json")
    assert result.exit_code == 0, (table, args, result.output)
    return json.loads(result.stdout)


@pytest.mark.parametrize("table", list(query.QUERIES))
def test_every_declared_filter_filters(cli, catalog, table):
    assert cli("init").exit_code == 0
    ids = _populate(catalog)
    cases = _cases(ids)
    everything = _rows(cli, table)
    assert everything, table
    for name in query.QUERIES[table].filters:
        one, several, keeps = cases[name]
        rows = _rows(cli, table, *_options(name, one))
        assert rows, (table, name)
        assert all(keeps(r, one) for r in rows), (table, name, rows)
        assert len(rows) < len(everything), (table, name)  # it really dropped rows
        if several is not None:  # several values: the union (IN), not nothing (= with a list)
            rows = _rows(cli, table, *_options(name, several))
            assert all(keeps(r, several) for r in rows), (table, name)
            for value in several:
                assert any(keeps(r, [value]) for r in rows), (table, name, value)


@pytest.mark.parametrize("table", list(query.QUERIES))
def test_every_filter_not_declared_is_a_one_line_usage_error(cli, table):
    declared = query.QUERIES[table].filters
    own = {p.name for p in query.QUERIES[table].parameters}
    refused = [f for f in FILTERS if f not in declared and f not in own]
    for name in refused:
        f = FILTERS[name]
        for flag in f.flags[0].split("/"):
            args = [flag] if f.type is bool else [flag, "1"]
            result = cli("query", table, *EXTRA.get(table, []), *args)
            assert result.exit_code == 2, (table, flag, result.output)
            assert result.stdout == ""
            (line,) = result.stderr.strip().splitlines()
            assert line.startswith(f"error: query {table} does not filter by {flag}; its filters: "), line
            assert "Traceback" not in result.output


def test_particles_bin_weighted_no_longer_returns_every_row(cli):
    assert cli("init").exit_code == 0
    result = cli("query", "particles", "--bin", "2", "--weighted")
    assert result.exit_code == 2
    assert result.stderr == ("error: query particles does not filter by --bin; its filters: --sample, --morphology, "
                             "--state, --scan, --analysis, --particle\n")


@pytest.mark.parametrize("table", list(query.QUERIES))
def test_library_refuses_filters_not_declared(table):
    spec = query.QUERIES[table]
    for name, f in FILTERS.items():
        if name in spec.filters or name in {p.name for p in spec.parameters}:
            continue
        value = True if f.type is bool else [1]
        with pytest.raises(FilterError, match=f"query {table} has no filter '{name}'") as info:
            spec.function(None, **{name: value})  # refused before the catalogue is touched
        assert info.value.parameters == (name,)


def test_query_samples_by_morphology(cli, catalog):
    assert cli("init").exit_code == 0
    _populate(catalog)
    result = cli("query", "samples", "--morphology", "rod", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert [line.split(",")[:3] for line in result.stdout.splitlines()[1:]] == [
        ["rod-A", "", "rod"], ["rod-B", "", "rod"]]
    assert cli("query", "samples", "--morphology", "rod", "--morphology", "gravel", "--format", "csv"
               ).stdout.count("\n") == 4  # header and three samples


def test_library_binds_several_values_with_in(catalog):
    _populate(catalog)
    assert list(query.samples(catalog, morphology=["rod", "gravel"])["sample"]) == ["gravel-C", "rod-A", "rod-B"]
    assert list(query.samples(catalog, morphology="gravel")["sample"]) == ["gravel-C"]
    assert list(query.cells(catalog, sample=("rod-A",), cell=["cA2", "cC1"])["cell"]) == ["cA2"]
    assert set(query.theta(catalog, bin=[1, 2], weighted=False)["bin_factor"]) == {1, 2}


def test_statistics_columns_are_the_models(catalog):
    from txmdb.db import models as m

    _populate(catalog)
    for function, model in ((query.theta, m.ThetaHistogram), (query.vector_size, m.VectorSizeStat),
                            (query.vector_size_histogram, m.VectorSizeHistogram), (query.u_theta, m.UThetaProfile),
                            (query.gradient_summary, m.GradientSummary), (query.edge_histogram, m.EdgeHistogram),
                            (query.depth_profile, m.DepthProfile), (query.particles, m.Particle)):
        columns = list(function(catalog).columns)
        assert columns[:4] == ["sample", "state", "scan_id", "analysis_id"]
        assert columns[4:] == list(m.data_columns(model)), function.__name__
    assert list(query.cycles(catalog).columns)[3:-1] == list(m.data_columns(m.Cycle))
