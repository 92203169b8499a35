from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyhepmc
import pytest

from ufsim_client import InputError, generate_pythia, particle_gun, read_hepmc, read_parquet
from ufsim_client.events import SIMULATED_PIDS, count_n_tracks, pseudorapidity
from ufsim_client.readers import Spectra, parse_gun_spec, spectra_from_pythia


def test_hepmc2_lhcb_files(hepmc_files: list[Path]) -> None:
    events = list(read_hepmc(hepmc_files, crossing="event"))
    # README: 26 collisions, about 1,700 charged e/mu/pi/K/p with pz > 0 and status 1 or 999.
    assert [e.number for e in events] == list(range(26))
    assert sum(len(e) for e in events) == 1682
    for event in events:
        assert np.isin(np.abs(event.pid), SIMULATED_PIDS).all()
        assert (event.momentum[:, 2] > 0).all()
        eta = pseudorapidity(event.momentum)
        assert event.n_tracks >= np.count_nonzero((eta > 2) & (eta < 5))


def test_hepmc2_default_is_one_event_per_crossing(hepmc_files: list[Path]) -> None:
    """The LHCb files are one bunch crossing each: the default gives the crossing's occupancy and PVs."""
    per_collision = list(read_hepmc(hepmc_files, crossing="event"))
    per_crossing = list(read_hepmc(hepmc_files))
    assert len(per_crossing) == 10
    assert sum(len(e) for e in per_crossing) == 1682
    # evt0 holds 3 collisions (events 0-2): the crossing's occupancy is their sum.
    assert per_crossing[0].n_tracks == sum(e.n_tracks for e in per_collision[:3]) == 71
    assert per_collision[0].n_tracks == 0
    assert list(read_hepmc(hepmc_files, max_events=4))[-1].number == 3
    # One PV per collision, 26 in all; each particle points at its own collision's PV.
    assert sum(len(e.primary_vertices) for e in per_crossing) == 26
    first = per_crossing[0]
    assert first.primary_vertices[0] == pytest.approx([0.8785444568, -0.1689414982, -76.66676446])
    for collision, event in zip(per_collision[:3], [first] * 3, strict=True):
        own = event.own_pv[event.mc["GenEventNumber"] == collision.mc["GenEventNumber"][0]]
        assert len(set(own.tolist())) <= 1


def test_hepmc2_links_back_to_the_record(hepmc_files: list[Path]) -> None:
    """SourceFile, GenEventNumber and MCKey find the very particle in the HepMC file (pyhepmc)."""
    event = list(read_hepmc(hepmc_files, max_events=2))[1]
    assert (event.mc["SourceFile"] == 1).all()
    with pyhepmc.open(hepmc_files[1]) as source:
        records = {gen.event_number: gen for gen in source}
    for row in range(0, len(event), 7):
        gen = records[int(event.mc["GenEventNumber"][row])]
        particle = gen.particles[int(event.mc["MCKey"][row]) - 1]
        assert particle.id == event.mc["MCKey"][row]
        assert particle.pid == event.pid[row]
        assert particle.momentum.pz == pytest.approx(event.momentum[row, 2], rel=1e-6)
        mother = particle.production_vertex.particles_in[0]
        assert (mother.pid, mother.id) == (event.mc["MC_MOTHER_ID"][row], event.mc["MC_MOTHER_KEY"][row])


def test_hepmc_max_events(hepmc_files: list[Path]) -> None:
    numbers = [e.number for e in read_hepmc(hepmc_files, max_events=5, crossing="event")]
    assert numbers == [0, 1, 2, 3, 4]


def test_hepmc3_matches_hepmc2(hepmc_files: list[Path], tmp_path: Path) -> None:
    converted = tmp_path / "evt1.hepmc3"
    with pyhepmc.open(hepmc_files[1]) as source, pyhepmc.open(converted, "w", format="HepMC3") as sink:
        for event in source:
            sink.write(event)
    (a,) = read_hepmc(hepmc_files[1])
    (b,) = read_hepmc(converted)
    np.testing.assert_array_equal(a.pid, b.pid)
    np.testing.assert_allclose(a.momentum, b.momentum)
    np.testing.assert_allclose(a.origin, b.origin)
    assert a.n_tracks == b.n_tracks


def test_hepmc_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(read_hepmc(tmp_path / "nope.hepmc"))


def _table(**columns: object) -> pa.Table:
    data: dict[str, object] = {
        "event": [0, 0, 2, 1],
        "pid": [211, -13, 2212, 321],
        "x": [0.0] * 4,
        "y": [0.0] * 4,
        "z": [1.0, 2.0, 3.0, 4.0],
        "px": [100.0, 200.0, 300.0, 400.0],
        "py": [0.0] * 4,
        "pz": [1000.0, 2000.0, 3000.0, -10.0],
    }
    data.update(columns)
    return pa.table({k: v for k, v in data.items() if v is not None})


def test_parquet_events_in_order(tmp_path: Path) -> None:
    pq.write_table(_table(), tmp_path / "p.parquet")
    events = list(read_parquet(tmp_path / "p.parquet"))
    assert [e.number for e in events] == [0, 1, 2]
    np.testing.assert_array_equal(events[0].pid, [211, -13])
    assert events[0].n_tracks == 2
    pq.write_table(_table(n_tracks=[5.0, 5.0, 7.0, 9.0]), tmp_path / "q.parquet")
    assert [e.n_tracks for e in read_parquet(tmp_path / "q.parquet")] == [5.0, 9.0, 7.0]
    assert len(list(read_parquet(tmp_path / "q.parquet", max_events=2))) == 2


def test_parquet_n_tracks_and_links_per_event(tmp_path: Path) -> None:
    """Shuffled rows of many events: each event's occupancy is count_n_tracks of its rows, in file order."""
    rng = np.random.default_rng(2)
    n = 3000
    event = rng.integers(0, 80, n)
    pid = rng.choice([11, -13, 211, -321, 2212], n)
    momentum = rng.normal(0, 1, (n, 3)) * [1, 1, 10] * 1000
    table = {
        "event": event,
        "pid": pid,
        "x": rng.normal(size=n),
        "y": rng.normal(size=n),
        "z": rng.normal(size=n),
    }
    table |= {"px": momentum[:, 0], "py": momentum[:, 1], "pz": momentum[:, 2]}
    pq.write_table(pa.table(table), tmp_path / "many.parquet")
    events = list(read_parquet(tmp_path / "many.parquet"))
    assert [e.number for e in events] == sorted(set(event.tolist()))
    for e in events:
        rows = np.flatnonzero(event == e.number)
        assert e.n_tracks == count_n_tracks(pid[rows], momentum[rows])
        assert e.mc is not None
        np.testing.assert_array_equal(e.mc["MCKey"], rows)
        np.testing.assert_array_equal(e.pid, pid[rows])
        np.testing.assert_array_equal(e.momentum, momentum[rows].astype(np.float32))


def test_parquet_row_groups_and_nulls(tmp_path: Path) -> None:
    """Several row groups read as one table; a null is an error naming its column, as a NaN is."""
    pq.write_table(_table(), tmp_path / "one.parquet")
    pq.write_table(_table(), tmp_path / "groups.parquet", row_group_size=1)
    assert pq.ParquetFile(tmp_path / "groups.parquet").num_row_groups == 4
    for a, b in zip(
        read_parquet(tmp_path / "one.parquet"), read_parquet(tmp_path / "groups.parquet"), strict=True
    ):
        np.testing.assert_array_equal(a.momentum, b.momentum)
        np.testing.assert_array_equal(a.pid, b.pid)
    for column, message in (("pz", "NaN"), ("pid", "integer")):
        values = pa.array(_table().column(column).to_pylist()[:3] + [None])
        pq.write_table(_table(**{column: values}), tmp_path / "null.parquet")
        with pytest.raises(InputError, match=message) as err:
            list(read_parquet(tmp_path / "null.parquet"))
        assert err.value.field == column


@pytest.mark.parametrize(
    ("columns", "field", "message"),
    [
        ({"pid": [211, 22, 2212, 321]}, "pid", "accepted values"),
        ({"pid": [211, 12345, 2212, 321]}, "pid", "12345"),
        ({"pid": [211.0, 13.0, 2212.0, 321.0]}, "pid", "integer"),
        ({"px": ["a", "b", "c", "d"]}, "px", "numeric"),
        ({"pz": [1.0, float("nan"), 3.0, 4.0]}, "pz", "NaN"),
        ({"z": None}, "z", "missing"),
        ({"n_tracks": [1.0, 2.0, 3.0, 4.0]}, "n_tracks", "several"),
        ({"event": [0, -1, 1, 1]}, "event", ">= 0"),
    ],
)
def test_parquet_bad_inputs_name_the_field(tmp_path: Path, columns: dict, field: str, message: str) -> None:
    pq.write_table(_table(**columns), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=message) as err:
        list(read_parquet(tmp_path / "bad.parquet"))
    assert err.value.field == field


def test_parquet_without_rows(tmp_path: Path) -> None:
    pq.write_table(_table().slice(0, 0), tmp_path / "empty.parquet")
    with pytest.raises(InputError, match="no particle"):
        list(read_parquet(tmp_path / "empty.parquet"))


def test_gun_flat_spec() -> None:
    events = list(particle_gun("pid=211/-321,p=2000:100000,eta=2:5,n=50", seed=1, n_events=3))
    assert [len(e) for e in events] == [50, 50, 50]
    p = np.linalg.norm(events[0].momentum.astype(float), axis=1)
    eta = pseudorapidity(events[0].momentum)
    assert ((p > 1999) & (p < 100001)).all()
    assert ((eta > 1.999) & (eta < 5.001)).all()
    assert set(np.unique(events[0].pid)) <= {211, -321}
    assert events[0].n_tracks == 50
    # Each event depends on (seed, number) only.
    again = list(particle_gun("pid=211/-321,p=2000:100000,eta=2:5,n=50", seed=1, n_events=2))
    np.testing.assert_array_equal(again[1].momentum, events[1].momentum)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("pid=22", "pid"),
        ("pid=pion", "pid"),
        ("p=5:1", "p"),
        ("eta=2", "eta"),
        ("n=0", "n"),
        ("colour=red", "colour"),
        ("spectra=missing.npz", "spectra"),
        ("pid211", "gun"),
    ],
)
def test_gun_bad_spec(spec: str, field: str) -> None:
    with pytest.raises(InputError) as err:
        parse_gun_spec(spec)
    assert err.value.field == field


def test_pythia_and_gun_spectra(tmp_path: Path) -> None:
    events = list(generate_pythia(seed=3, n_events=3))
    assert 1 <= len(events) <= 3
    assert all(np.isin(np.abs(e.pid), SIMULATED_PIDS).all() and (e.momentum[:, 2] > 0).all() for e in events)
    again = list(generate_pythia("default", seed=3, n_events=3))
    np.testing.assert_array_equal(events[0].momentum, again[0].momentum)

    spectra = spectra_from_pythia(seed=4, n_events=5)
    spectra.save(tmp_path / "spectra.npz")
    loaded = Spectra.load(tmp_path / "spectra.npz")
    np.testing.assert_array_equal(loaded.counts, spectra.counts)
    (gun_event,) = particle_gun(str(tmp_path / "spectra.npz"), seed=0, n_events=1)
    assert set(np.unique(gun_event.pid)) <= set(spectra.pids.tolist())
    log_p = np.log10(np.linalg.norm(gun_event.momentum.astype(float), axis=1))
    assert ((log_p >= 1.999) & (log_p <= 6.001)).all()


def test_pythia_bad_card(tmp_path: Path) -> None:
    card = tmp_path / "bad.cmnd"
    card.write_text("Beams:eCM = 13000.\nNoSuchSetting:atAll = on\n")
    with pytest.raises(InputError, match="NoSuchSetting") as err:
        list(generate_pythia(card, seed=1, n_events=1))
    assert err.value.field == "pythia"
