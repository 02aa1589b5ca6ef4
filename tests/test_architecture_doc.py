"""docs/architecture.md names every module of the application under its package's heading, and
no module that is gone: the map a newcomer reads first must match the code."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()
PACKAGES = sorted(path.parent.name for path in ROOT.glob("*/__init__.py") if path.parent.name not in {"tests"})


def section(package: str) -> str:
    match = re.search(rf"^## `{package}/`.*?(?=^## |\Z)", DOC, flags=re.M | re.S)
    assert match, f"docs/architecture.md has no section for {package}/"
    return match.group(0)


def documented(package: str) -> set[str]:
    """The modules a line of the section is about: those named before its first colon."""
    heads = re.findall(r"^- (.+?): ", section(package), flags=re.M)
    return {name for head in heads for name in re.findall(r"`([\w/]+\.py)`", head)}


def modules(package: str) -> set[str]:
    found = {
        str(path.relative_to(ROOT / package)) for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts and path.name not in {"__init__.py", "apps.py"}
    }
    if package == "providers":
        found.add("__init__.py")  # the registry lives there
    return found


def test_every_module_is_on_the_map_and_nothing_else():
    for package in PACKAGES:
        assert modules(package) == documented(package), package
