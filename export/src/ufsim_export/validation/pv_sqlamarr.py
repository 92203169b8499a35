"""The served PV model against SQLamarr's own ``PVReconstruction`` on the same HepMC2 files.

SQLamarr 0.0rc7 runs in its own environment (``make venv-sqlamarr``) through
``scripts/sqlamarr_pv.py``: it loads the files (one event per file), finds the primary vertices
(``PVFinder``) and smears them ``repeats`` times. The served model (``model_repository/
pv_reconstruction/1/model.onnx``, run in ONNX Runtime) smears the same true vertices as often, with
distinct keys. Per coordinate, the residuals (reconstructed − true) are compared: mean, central-68%
half-width, a two-sample Kolmogorov-Smirnov test, and the reported uncertainties.

    python -m ufsim_export.validation.pv_sqlamarr [--repeats 400] [--out export/reports]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from scipy import stats

from ..files import write_text
from ..graphs import rng

__all__ = ["compare", "run_sqlamarr", "served_smearing", "write_report"]

ROOT = Path(__file__).resolve().parents[4]
SQLAMARR_PYTHON = ROOT / ".venv-sqlamarr" / "bin" / "python"
SCRIPT = ROOT / "scripts" / "sqlamarr_pv.py"
DATA = ROOT.parent / "shared" / "data" / "lamarr-hepmc2"
MODEL = ROOT / "model_repository" / "pv_reconstruction" / "1" / "model.onnx"
AXES = ("x", "y", "z")


def run_sqlamarr(
    files: Sequence[Path], db: Path, *, repeats: int, seed: int = 1, python: Path = SQLAMARR_PYTHON
) -> dict[str, Any]:
    """SQLamarr's true and reconstructed PVs: {"version", "true" (n, 3), "reco" (n, 3), "sigma" (n, 3)}."""
    if not python.is_file():
        raise FileNotFoundError(f"{python} does not exist: run `make venv-sqlamarr`")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pvs.json"
        command = [str(python), str(SCRIPT), "--db", str(db), "--out", str(out)]
        command += ["--repeats", str(repeats), "--seed", str(seed), *map(str, files)]
        subprocess.run(command, check=True, capture_output=True, text=True)
        raw = json.loads(out.read_text())
    rows = np.asarray(raw["rows"], dtype=np.float64).reshape(-1, 10)
    return {
        "version": raw["sqlamarr_version"],
        "true": rows[:, 1:4],
        "reco": rows[:, 4:7],
        "sigma": rows[:, 7:10],
    }


def served_smearing(
    true_pv: NDArray[Any], *, repeats: int, seed: int = 1, model: Path = MODEL
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The served model on ``repeats`` copies of ``true_pv`` (m, 3): (true, reconstructed, error)."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    true = np.tile(np.asarray(true_pv, dtype=np.float32), (repeats, 1))
    keys = rng.mix64(np.arange(len(true), dtype=np.uint64) + np.uint64(seed) * np.uint64(1 << 40)).reshape(
        -1, 1
    )
    position, error = session.run(None, {"true_pv": true, "rng_key": keys})
    return true.astype(np.float64), position.astype(np.float64), error.astype(np.float64)


def compare(ours: NDArray[np.float64], theirs: NDArray[np.float64]) -> list[dict[str, Any]]:
    """Per coordinate: residual mean, central-68% half-width and counts of both, and the KS p-value."""
    rows = []
    for axis, name in enumerate(AXES):
        a, b = ours[:, axis], theirs[:, axis]
        q = [np.percentile(v, [16, 84]) for v in (a, b)]
        rows.append(
            {
                "coord": name,
                "n_ufsim": len(a),
                "n_sqlamarr": len(b),
                "mean_ufsim": float(np.mean(a)),
                "mean_sqlamarr": float(np.mean(b)),
                "w68_ufsim": float((q[0][1] - q[0][0]) / 2),
                "w68_sqlamarr": float((q[1][1] - q[1][0]) / 2),
                "ks_pvalue": float(stats.ks_2samp(a, b).pvalue),
            }
        )
    return rows


def write_report(out: Path, *, repeats: int, seed: int = 1) -> Path:
    """Run both on the ten HepMC2 crossings; write ``pv_sqlamarr.md`` and ``figures/pv_sqlamarr.png``."""
    import matplotlib  # deferred: only the report draws, and pyplot needs the Agg backend chosen first

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: after the backend is chosen

    files = sorted(DATA.glob("evt*.mc2"))
    theirs = run_sqlamarr(files, DATA / "PrimaryVertexSmearing.db", repeats=repeats, seed=seed)
    vertices = np.unique(theirs["true"], axis=0)
    true, reco, error = served_smearing(vertices, repeats=repeats, seed=seed)
    ours_res, theirs_res = reco - true, theirs["reco"] - theirs["true"]
    rows = compare(ours_res, theirs_res)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for axis, (ax, name) in enumerate(zip(axes, AXES, strict=True)):
        limit = 4 * rows[axis]["w68_sqlamarr"]
        bins = np.linspace(-limit, limit, 61)
        ax.hist(
            np.clip(theirs_res[:, axis], -limit, limit), bins, histtype="step", density=True, label="SQLamarr"
        )
        ax.hist(
            np.clip(ours_res[:, axis], -limit, limit),
            bins,
            histtype="step",
            density=True,
            label="ufsim served",
        )
        ax.set_xlabel(f"reconstructed − true {name} [mm] (outer bins: overflow)")
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "figures" / "pv_sqlamarr.png", dpi=80)
    plt.close(fig)
    lines = [
        "# Primary-vertex reconstruction: ufsim's served model against SQLamarr",
        "",
        f"SQLamarr {theirs['version']} (`make venv-sqlamarr`, `scripts/sqlamarr_pv.py`) and the served "
        f"`pv_reconstruction` model smear the {len(vertices)} primary vertices of the ten HepMC2 crossings "
        f"({len(files)} files) {repeats} times each. Re-run: `make validate-pv`.",
        "",
        "| coord | PVs ufsim | PVs SQLamarr | mean ufsim [mm] | mean SQLamarr [mm] "
        "| 68% half-width ufsim [mm] | 68% half-width SQLamarr [mm] | KS p-value |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['coord']} | {r['n_ufsim']} | {r['n_sqlamarr']} | {r['mean_ufsim']:.2e} | "
            f"{r['mean_sqlamarr']:.2e} | {r['w68_ufsim']:.4f} | {r['w68_sqlamarr']:.4f} | "
            f"{r['ks_pvalue']:.3f} |"
        )
    sigma_ours = np.unique(error, axis=0)[0].round(5).tolist()
    sigma_theirs = np.unique(theirs["sigma"], axis=0)[0].round(5).tolist()
    verdict = "equal" if sigma_ours == sigma_theirs else "DIFFERENT"
    lines += [
        "",
        f"Reported uncertainties (x, y, z): ufsim {sigma_ours} mm, SQLamarr {sigma_theirs} mm ({verdict}).",
        "",
        "![PV residuals](figures/pv_sqlamarr.png)",
        "",
    ]
    path = out / "pv_sqlamarr.md"
    write_text(path, "\n".join(lines))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the comparison report."""
    parser = argparse.ArgumentParser(prog="python -m ufsim_export.validation.pv_sqlamarr")
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "export" / "reports")
    args = parser.parse_args(argv)
    sys.stdout.write(f"wrote {write_report(args.out, repeats=args.repeats, seed=args.seed)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
