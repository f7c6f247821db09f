"""README's measured tables equal what experiments/readme_tables.py regenerates from the committed JSON."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import readme_tables  # noqa: E402


@pytest.mark.parametrize("name", sorted(readme_tables.TABLES))
def test_readme_table_matches_its_artefact(name):
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    begin, end = readme_tables.markers(name)
    assert begin in readme and end in readme, f"README.md lacks {begin} ... {end}"
    got = readme[readme.index(begin):readme.index(end) + len(end)]
    assert got == readme_tables.block(name), (
        f"README's {name} table differs from its committed artefact: run "
        f"`python experiments/readme_tables.py --write {name}` and commit")


def test_replace_block_refuses_missing_markers():
    with pytest.raises(ValueError, match="lacks the markers"):
        readme_tables.replace_block("no markers here", "bench-sigma")
