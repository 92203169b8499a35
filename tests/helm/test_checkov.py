"""checkov on the rendered manifests (defaults and every example): every failing check is one that
deploy/helm/README.md accepts with its reason, and every accepted check still fails somewhere."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_support import EXAMPLES, ROOT, load_values, render

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
README = ROOT / "deploy" / "helm" / "README.md"


def accepted_checks() -> dict[str, str]:
    """check id -> reason, from the README's "Accepted checkov findings" table."""
    section = README.read_text().split("### Accepted checkov findings", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (CKV\w+) \(([^)]*)\) \| ([^|]+) \| ([^|]+) \|$", section, re.M)
    return {check: reason.strip() for check, _, _, reason in rows}


def failed_checks(values: dict[str, Any], folder: Path) -> set[tuple[str, str]]:
    """(check id, resource) pairs checkov fails on the manifests rendered from ``values``."""
    if not CHECKOV.is_file():
        pytest.skip(f"{CHECKOV} is missing: run `make venv-checkov`")
    folder.mkdir(parents=True)
    for index, manifest in enumerate(render(values)):
        (folder / f"{index:02d}-{manifest['kind']}.yaml").write_text(yaml.safe_dump(manifest))
    command = [str(CHECKOV), "-d", str(folder), "--framework", "kubernetes", "-o", "json", "--quiet"]
    done = subprocess.run(
        [*command, "--skip-download"], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports), reports
    assert sum(r["summary"]["passed"] for r in reports) > 50, "checkov ran almost no check"
    return {(c["check_id"], c["resource"]) for r in reports for c in r["results"]["failed_checks"]}


RENDERINGS = {"defaults": {}, **{p.stem: load_values(p) for p in EXAMPLES}}


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[tuple[str, str]]]:
    """Failed checks of each rendering (checkov runs once per rendering: its graph checks span files)."""
    base = tmp_path_factory.mktemp("checkov")
    return {name: failed_checks(values, base / name) for name, values in RENDERINGS.items()}


def test_every_failing_check_is_accepted_with_a_reason(findings: dict[str, set[tuple[str, str]]]) -> None:
    accepted = accepted_checks()
    assert accepted and all(len(reason) > 40 for reason in accepted.values()), accepted
    unexplained = {name: sorted(f for f in found if f[0] not in accepted) for name, found in findings.items()}
    assert not any(unexplained.values()), unexplained


def test_every_accepted_check_still_fails_somewhere(findings: dict[str, set[tuple[str, str]]]) -> None:
    failing = {check for found in findings.values() for check, _ in found}
    assert set(accepted_checks()) <= failing, "remove checks that pass now from deploy/helm/README.md"


def test_checkov_catches_a_missing_network_policy(tmp_path: Path) -> None:
    """The scan can fail: without the chart's NetworkPolicy, checkov reports the unguarded Triton pods."""
    found = failed_checks({"networkPolicy": {"enabled": False}}, tmp_path / "open")
    assert any(check == "CKV2_K8S_6" and "ufsim" in resource for check, resource in found), found
    assert "CKV2_K8S_6" not in accepted_checks()
