"""Every model call is admitted and settled by billing/calls.py, and by nothing else: a caller that
reserved or billed on its own would count or charge a call another way."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The call path itself, and the modules whose functions it calls.
ALLOWED = {"billing/calls.py", "billing/admission.py", "billing/ledger.py", "billing/quotas.py"}
ACCOUNTING = {
    ("admission", "reserve"), ("admission", "release"), ("admission", "settle_call"), ("admission", "check_model"),
    ("admission", "fallback_for"), ("admission", "fallback_when_refused"), ("ledger", "record"), ("quotas", "admit"),
    ("quotas", "settle"),
}


def accounting_calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            if (node.func.value.id, node.func.attr) in ACCOUNTING:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.func.value.id}.{node.func.attr}")
        if isinstance(node, ast.ImportFrom) and node.module in {"billing.admission", "billing.ledger", "billing.quotas"}:
            names = {alias.name for alias in node.names}
            found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {name}" for name in names & {"reserve", "record", "settle_call", "admit", "settle"}]
    return found


def test_the_finder_sees_a_reservation_made_elsewhere(tmp_path):
    (tmp_path / "x.py").write_text("from billing import admission\n\ndef f():\n    admission.reserve(1, 2, 3, 4, 5)\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert accounting_calls(tmp_path / "x.py") == ["x.py:4 admission.reserve"]
    finally:
        ROOT = saved


def test_only_the_call_path_reserves_and_bills():
    sources = [path for package in ("accounts", "billing", "chat", "parley", "providers", "streaming", "bench", "shadows") for path in (ROOT / package).rglob("*.py")]
    outside = [hit for path in sources if str(path.relative_to(ROOT)) not in ALLOWED for hit in accounting_calls(path)]
    assert outside == []
