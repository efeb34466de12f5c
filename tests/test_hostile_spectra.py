"""Spectra whose encoding or energy unit used to be misread, through ``txmdb xas ingest`` on SQLite and PostgreSQL.

Issue 9 §9: an XDI file starting with a byte-order mark lost its XDI header (and so its metadata
and column names); energies below 100 were keV in every file. Now a spectrum takes its energy
unit from its header where the header states one, and otherwise reads small energies as keV
only when they bracket the edge's energy in keV — an eV-scale M-edge scan stays in eV.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA
from tests.test_hostile_cycling import catalogue_state
from txmdb.io.spectra import HC_EV_ANGSTROM, read_spectrum

NI_FOIL = DATA / "xas" / "ni_metal_rt.xdi"
NIO_KEV = DATA / "xas" / "ref_NiO.txt"
BOM = b"\xef\xbb\xbf"


@pytest.fixture
def lab(cli):
    assert cli("init").exit_code == 0
    for sample in ("S1", "S2"):
        assert cli("sample", "add", sample).exit_code == 0
    return cli


def _edge_energy(cli, path: Path, sample: str, edge: str = "Ni-K") -> float:
    result = cli("xas", "ingest", path, "--sample", sample, "--edge", edge)
    assert result.exit_code == 0, result.output
    rows = json.loads(cli("query", "xas", "--sample", sample, "--format", "json").stdout)
    assert len(rows) == 1
    return rows[0]["edge_energy_ev"]


def _refused(cli, path: Path, problem: str, *args: str) -> None:
    before = catalogue_state(cli, ("xas_measurements",))
    result = cli("xas", "ingest", path, "--sample", "S1", *args)
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: {path}: {problem}\n"
    assert "Traceback" not in result.output
    assert catalogue_state(cli, ("xas_measurements",)) == before


def _with_bom(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(BOM + text.encode("utf-8"))
    return path


# --------------------------------------------------------------------------- byte-order mark


def test_xdi_with_a_byte_order_mark_keeps_its_header(tmp_path):
    plain = read_spectrum(NI_FOIL)
    marked = read_spectrum(_with_bom(tmp_path, NI_FOIL.read_text(), "ni_bom.xdi"))
    assert marked.metadata["format"] == "xdi"
    fields = marked.metadata["fields"]
    assert fields["Mono.d_spacing"] == "3.13555"
    assert fields["Element.symbol"] == "Ni" and fields["Element.edge"] == "K"
    assert fields["Scan.edge_energy"] == "8333.0"
    assert fields == plain.metadata["fields"]
    assert marked.source_columns == {"energy": "energy", "mu": "mutrans"}
    assert marked.metadata["energy_unit"] == "eV"
    assert np.array_equal(marked.energy_ev, plain.energy_ev) and np.array_equal(marked.mu, plain.mu)


def _as_angles(text: str) -> str:
    """ni_metal_rt.xdi with its energy column turned into monochromator angles (Si 111, its d-spacing)."""
    d_spacing = 3.13555
    out = []
    for line in text.splitlines():
        if line.startswith("# Column.1:"):
            line = "# Column.1: angle degrees"
        elif line.startswith("#   energy"):
            line = "#   angle      mutrans          i0"
        elif not line.startswith("#") and line.strip():
            energy, *rest = line.split()
            theta = math.degrees(math.asin(HC_EV_ANGSTROM / (2 * d_spacing * float(energy))))
            line = "  ".join([f"{theta:.12f}", *rest])
        out.append(line)
    return "\n".join(out) + "\n"


def test_bom_xdi_ingests_like_the_plain_file(lab, tmp_path):
    """Read as plain text, the marked file's columns were (energy, I0, It): a one-line error, no spectrum."""
    reference = _edge_energy(lab, NI_FOIL, "S1")
    assert _edge_energy(lab, _with_bom(tmp_path, NI_FOIL.read_text(), "ni_bom.xdi"), "S2") == reference


def test_bom_xdi_of_monochromator_angles_uses_its_d_spacing(lab, tmp_path):
    reference = _edge_energy(lab, NI_FOIL, "S1")
    angles = _with_bom(tmp_path, _as_angles(NI_FOIL.read_text()), "ni_angles_bom.xdi")
    assert read_spectrum(angles).metadata["energy_unit"] == "deg"
    assert _edge_energy(lab, angles, "S2") == pytest.approx(reference, abs=1e-6)


# --------------------------------------------------------------------------- energy units


def _two_columns(path: Path, energies: np.ndarray, header: str | None = None) -> Path:
    mu = 0.2 + 1 / (1 + np.exp(-(energies - energies.mean()) / (np.ptp(energies) / 40)))
    lines = [header] if header else []
    lines += [f"{float(e)!r} {float(m)!r}" for e, m in zip(energies, mu, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ev_scale_m_edge_scan_stays_in_ev(tmp_path):
    """Ni M2,3 edge near 68 eV: values 50–90 are eV, whatever edge is asked for."""
    energies = np.linspace(50.0, 90.0, 81)
    path = _two_columns(tmp_path / "ni_m_edge.txt", energies)
    for edge in (None, "Ni-K", "Ni-L3"):
        spectrum = read_spectrum(path, edge=edge)
        assert spectrum.metadata["energy_unit"] == "eV"
        assert np.array_equal(spectrum.energy_ev, energies)


def test_kev_table_is_kev_only_around_its_edge():
    assert read_spectrum(NIO_KEV).metadata["energy_unit"] == "keV"
    ni_k = read_spectrum(NIO_KEV, edge="Ni-K")
    assert ni_k.metadata["energy_unit"] == "keV"
    assert ni_k.energy_ev[0] == 8200.0 and ni_k.energy_ev[-1] == pytest.approx(9000.0)
    # 8.2–9.0 does not bracket the Ni L3 edge (0.8527 keV): the values stay as written.
    assert read_spectrum(NIO_KEV, edge="Ni-L3").metadata["energy_unit"] == "eV"


def test_a_unit_in_the_header_wins(tmp_path):
    energies = np.linspace(8.2, 9.0, 161)
    named_ev = _two_columns(tmp_path / "named_ev.txt", energies, "energy(eV) mu")
    assert read_spectrum(named_ev, edge="Ni-K").metadata["energy_unit"] == "eV"
    named_kev = _two_columns(tmp_path / "named_kev.txt", np.linspace(50.0, 90.0, 81), "energy_kev mu")
    spectrum = read_spectrum(named_kev)
    assert spectrum.metadata["energy_unit"] == "keV" and spectrum.energy_ev[0] == 50000.0


def test_nio_kev_table_ingests_for_ni_k(lab):
    assert 8330 < _edge_energy(lab, NIO_KEV, "S1") < 8350


def test_xdi_energy_in_kev_by_its_header(lab, tmp_path):
    text = NI_FOIL.read_text().replace("# Column.1: energy eV", "# Column.1: energy keV")
    lines = [line if line.startswith("#") else f"{float(line.split()[0]) / 1000!r}  " + "  ".join(line.split()[1:])
             for line in text.splitlines()]
    path = tmp_path / "ni_kev.xdi"
    path.write_text("\n".join(lines) + "\n")
    reference = _edge_energy(lab, NI_FOIL, "S1")
    assert _edge_energy(lab, path, "S2") == pytest.approx(reference, abs=1e-6)


def test_an_energy_unit_that_is_not_understood_is_refused(lab, tmp_path):
    path = tmp_path / "furlongs.xdi"
    path.write_text(NI_FOIL.read_text().replace("# Column.1: energy eV", "# Column.1: energy furlongs"))
    _refused(lab, path, "energy unit 'furlongs' of column 'energy' is not understood (eV, keV, or deg for a "
                        "monochromator angle)", "--edge", "Ni-K")


def test_a_spectrum_file_over_the_size_limit_is_refused(lab, tmp_path):
    """A spectrum of many millions of rows would take ~15× its size in memory to parse."""
    from txmdb.vocabulary import MAX_SPECTRUM_FILE_BYTES

    row = b"8333.0 1.0\n"
    path = tmp_path / "huge.txt"
    path.write_bytes(row * (MAX_SPECTRUM_FILE_BYTES // len(row) + 1))
    assert path.stat().st_size > MAX_SPECTRUM_FILE_BYTES
    _refused(lab, path, "more than 64 MiB, too large for a spectrum or pattern text file", "--edge", "Ni-K")
