"""SQLamarr's tracking chain (PyLamarr steps 1-8, lamarr-reference §2) on HepMC2 bunch crossings, timed.

The chain is the one Lamarr runs: load the crossing, find primary vertices, select MC particles, smear
the vertices, then per charged particle ``acceptance`` and ``efficiency`` (library ``Plugin``s), the track
class drawn in SQL with ``random_category``, the closest-to-beam point, and per reconstructed track the
``resolution`` and ``covariance`` generators (``GenerativePlugin``, 128 normals each), all from the library
in ``../shared/data/lamarr-trk-2016MU/library``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

SIGNAL_CONDITION = "2016_pp_MagUp"

_CHARGED = "p.pz > 1. AND propagation_charge(p.pid) <> 0. AND abs(p.pid) IN (11, 13, 211, 321, 2212)"
ACCEPTANCE_QUERY = f"""
SELECT p.mcparticle_id, ov.x AS mc_x, ov.y AS mc_y, ov.z AS mc_z,
       log10(norm2(p.px, p.py, p.pz)) AS mc_log10_p, p.px/p.pz AS mc_tx, p.py/p.pz AS mc_ty,
       pseudorapidity(p.px, p.py, p.pz) AS mc_eta, azimuthal(p.px, p.py, p.pz) AS mc_phi,
       abs(p.pid) == 11 AS mc_is_e, abs(p.pid) == 13 AS mc_is_mu,
       (abs(p.pid) == 211 OR abs(p.pid) == 321 OR abs(p.pid) == 2212) AS mc_is_h,
       propagation_charge(p.pid) AS mc_charge
FROM MCParticles AS p INNER JOIN MCVertices AS ov ON p.production_vertex = ov.mcvertex_id
WHERE {_CHARGED}
"""
ASSIGN_QUERY = """
SELECT acc.mcparticle_id,
       random_category(eff.not_recoed, 0, 0, eff.long, eff.upstream) AS track_type
FROM tmp_acceptance_out AS acc INNER JOIN tmp_efficiency_out AS eff ON acc.mcparticle_id = eff.mcparticle_id
WHERE random_category(1 - acc.acceptance, acc.acceptance) == 1
"""
CTB_QUERY = """
SELECT p.mcparticle_id, p.px/p.pz AS tx, p.py/p.pz AS ty, ov.x AS x0, ov.y AS y0, ov.z AS z0,
       ((p.px/p.pz)*(p.px/p.pz)*ov.z - (p.px/p.pz)*ov.x + (p.py/p.pz)*(p.py/p.pz)*ov.z - (p.py/p.pz)*ov.y)
       / ((p.px/p.pz)*(p.px/p.pz) + (p.py/p.pz)*(p.py/p.pz)) AS z
FROM MCParticles AS p
INNER JOIN MCVertices AS ov ON p.production_vertex = ov.mcvertex_id
INNER JOIN tmp_particles_recoed_as AS r ON r.mcparticle_id = p.mcparticle_id
WHERE r.track_type IN (3, 4, 5)
"""
_KINEMATICS = (
    "       c.x0 + c.tx * (c.z - c.z0) AS ctb_x, c.y0 + c.ty * (c.z - c.z0) AS ctb_y, c.z AS ctb_z,\n"
    "       c.tx AS mc_tx, c.ty AS mc_ty, log10(norm2(p.px, p.py, p.pz)) AS mc_log10_p,\n"
)
_FLAGS_AND_JOINS = """       abs(p.pid) == 11 AS mc_is_e, abs(p.pid) == 13 AS mc_is_mu,
       (abs(p.pid) == 211 OR abs(p.pid) == 321 OR abs(p.pid) == 2212) AS mc_is_h,
       r.track_type == 3 AS is_long, r.track_type == 4 AS is_upstream, r.track_type == 5 AS is_downstream
FROM MCParticles AS p
INNER JOIN tmp_closest_to_beam AS c ON c.mcparticle_id = p.mcparticle_id
INNER JOIN tmp_particles_recoed_as AS r ON r.mcparticle_id = p.mcparticle_id
"""
# The library takes the conditions by position: resolution's, then covariance's with the resolution's
# track-quality outputs between the kinematics and the flags.
RESOLUTION_QUERY = "\nSELECT p.mcparticle_id,\n" + _KINEMATICS + _FLAGS_AND_JOINS
COVARIANCE_QUERY = (
    "\nSELECT p.mcparticle_id,\n"
    + _KINEMATICS
    + "       res.chi2PerDoF AS chi2PerDoF, res.nDoF_f AS nDoF_f, res.ghostProb AS ghostProb,\n"
    + _FLAGS_AND_JOINS
    + "INNER JOIN tmp_resolution_out AS res ON res.mcparticle_id = p.mcparticle_id\n"
)
COUNT_QUERY = "SELECT (SELECT count(*) FROM tmp_acceptance_out), (SELECT count(*) FROM tmp_covariance_out)"
RESOLUTION_OUTPUTS = ["dx", "dy", "dz", "dtx", "dty", "dp", "chi2PerDoF", "nDoF_f", "ghostProb"]
COVARIANCE_OUTPUTS = [f"log_cov_{i}{i}" for i in range(5)] + [
    f"corr_{i}{j}" for j in range(1, 5) for i in range(j)
]


@dataclass(frozen=True)
class ChainRun:
    """One pass of the chain over every crossing."""

    wall_s: float
    cpu_s: float
    charged: int
    tracks: int


def run_chain(files: list[Path], library: Path, pv_smearing: Path, work: Path, seed: int = 12345) -> ChainRun:
    """Load every crossing into a fresh event store (an SQLite file in ``work``, as PyLamarr does) and run
    the tracking chain once over them."""
    import SQLamarr

    store = work / f"lamarr-{seed}.db"
    store.unlink(missing_ok=True)
    wall, cpu = time.perf_counter(), time.process_time()
    db = SQLamarr.SQLite3DB(f"file:{store}")
    db.seed(seed)
    loader = SQLamarr.HepMC2DataLoader(db)
    for number, path in enumerate(files):
        loader.load(str(path), 1, number)
    lib = str(library)
    steps = [
        SQLamarr.PVFinder(db),
        SQLamarr.MCParticleSelector(db),
        SQLamarr.PVReconstruction(db, str(pv_smearing), "PVSmearing", SIGNAL_CONDITION),
        SQLamarr.Plugin(
            db, lib, "acceptance", ACCEPTANCE_QUERY, "tmp_acceptance_out", ["acceptance"], ["mcparticle_id"]
        ),  # fmt: skip
        SQLamarr.Plugin(
            db,
            lib,
            "efficiency",
            ACCEPTANCE_QUERY,
            "tmp_efficiency_out",
            ["not_recoed", "long", "upstream", "downstream"],
            ["mcparticle_id"],
        ),  # fmt: skip
        SQLamarr.TemporaryTable(db, "tmp_particles_recoed_as", ["mcparticle_id", "track_type"], ASSIGN_QUERY),
        SQLamarr.TemporaryTable(
            db, "tmp_closest_to_beam", ["mcparticle_id", "tx", "ty", "x0", "y0", "z0", "z"], CTB_QUERY
        ),  # fmt: skip
        SQLamarr.GenerativePlugin(
            db,
            lib,
            "resolution",
            RESOLUTION_QUERY,
            "tmp_resolution_out",
            RESOLUTION_OUTPUTS,
            128,
            ["mcparticle_id"],
        ),  # fmt: skip
        SQLamarr.GenerativePlugin(
            db,
            lib,
            "covariance",
            COVARIANCE_QUERY,
            "tmp_covariance_out",
            COVARIANCE_OUTPUTS,
            128,
            ["mcparticle_id"],
        ),  # fmt: skip
        SQLamarr.TemporaryTable(db, "bench_counts", ["charged", "tracks"], COUNT_QUERY, make_persistent=True),
    ]
    SQLamarr.Pipeline(steps).execute()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    with db.connect() as connection:
        charged, tracks = connection.execute("SELECT charged, tracks FROM bench_counts").fetchone()
    del db
    store.unlink(missing_ok=True)
    return ChainRun(wall, cpu, int(charged), int(tracks))
