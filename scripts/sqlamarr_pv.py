"""SQLamarr's own PVReconstruction on HepMC2 files: true and reconstructed PVs as JSON.

Runs in the separate environment ``make venv-sqlamarr`` (SQLamarr 0.0rc7 and its HepMC3; only the
standard library besides), so it imports nothing from ufsim. Each file is loaded as one event, as
SQLamarr does; ``PVReconstruction`` is executed ``--repeats`` times on the same primary vertices with
the database seeded by ``--seed``, each execution smearing every PV anew.

    .venv-sqlamarr/bin/python scripts/sqlamarr_pv.py --db PrimaryVertexSmearing.db --out pvs.json evt*.mc2
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path


def main() -> None:
    """Write {"sqlamarr_version", "rows": [[mcvertex_id, true x, y, z, reco x, y, z, sigma x, y, z], ...]}."""
    import SQLamarr

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--db", type=Path, required=True, help="PrimaryVertexSmearing.db")
    parser.add_argument("--condition", default="2016_pp_MagUp")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    store = args.out.with_suffix(".sqlite")
    store.unlink(missing_ok=True)
    db = SQLamarr.SQLite3DB(str(store)).seed(args.seed)
    loader = SQLamarr.HepMC2DataLoader(db)
    for number, path in enumerate(args.files):
        loader.load(str(path), 1, number)
    SQLamarr.Pipeline([SQLamarr.PVFinder(db), SQLamarr.MCParticleSelector(db)]).execute()
    reconstruction = SQLamarr.Pipeline(
        [SQLamarr.PVReconstruction(db, str(args.db), "PVSmearing", args.condition)]
    )
    rows: list[tuple[float, ...]] = []
    query = (
        "SELECT v.mcvertex_id, m.x, m.y, m.z, v.x, v.y, v.z, v.sigma_x, v.sigma_y, v.sigma_z "
        "FROM Vertices AS v JOIN MCVertices AS m ON v.mcvertex_id = m.mcvertex_id"
    )
    for _ in range(args.repeats):
        reconstruction.execute()  # one row per PV in Vertices (unique per MC vertex): read, then clear
        with sqlite3.connect(str(store)) as connection:
            rows += connection.execute(query).fetchall()
            connection.execute("DELETE FROM Vertices")
    del reconstruction, loader, db
    store.unlink(missing_ok=True)
    args.out.write_text(json.dumps({"sqlamarr_version": SQLamarr.version, "rows": rows}))
    sys.stdout.write(f"{len(rows)} reconstructed PVs -> {args.out}\n")


if __name__ == "__main__":
    main()
