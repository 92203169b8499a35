"""Docs derive from the spec: the README's contract tables are the generated ones."""

from __future__ import annotations

from pathlib import Path

from ufsim_export.repository.docs import BEGIN, END, contract_markdown
from ufsim_export.spec import PipelineSpec


def test_readme_contract_is_generated_from_the_spec(spec: PipelineSpec, repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    assert BEGIN in readme and END in readme, "README.md lost its contract markers"
    start = readme.index(BEGIN)
    block = readme[start : readme.index(END, start) + len(END)]
    assert block == contract_markdown(spec), "README contract is stale: paste `ufsim-export contract` into it"
