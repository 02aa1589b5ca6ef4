"""`manage.py verify_audit [--head ID:HASH]`: is the support console's audit record whole?"""

import sys
from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.core.management.base import BaseCommand

from support import audit


def head(value: str) -> tuple[int, str]:
    row_id, _, row_hash = value.partition(":")
    if not (row_id.isdigit() and len(row_hash) == 64 and all(c in "0123456789abcdef" for c in row_hash)):
        raise ArgumentTypeError(f"{value!r} is not ROW_ID:SHA256 (as printed by an earlier verify_audit)")
    return int(row_id), row_hash


class Command(BaseCommand):
    help = (
        "Walks the audit record in id order and checks every row's hash and its link to the row before. "
        "Prints 'audit record intact: N rows' and the last row's hash and exits 0, or prints the first broken "
        "link (the row, and whether it was edited or rows before it are missing) and exits 1. A deleted last row "
        "is caught through the record's head, kept in the database beside it; a record rewritten by someone who "
        "can also rewrite the head is caught only with --head, a last row's hash copied out of the database earlier."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--head", type=head, metavar="ID:HASH",
            help="A last row printed by an earlier run and kept outside the database: fail unless that row still has that hash.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        result = audit.check()
        if isinstance(result, audit.Intact) and options["head"]:
            result = audit.still_has(*options["head"]) or result
        if isinstance(result, audit.Broken):
            self.stdout.write(str(result))
            sys.exit(1)
        self.stdout.write(f"audit record intact: {result.rows} rows")
        if result.rows:
            self.stdout.write(f"last row: {result.last_id}:{result.last_hash} (keep a copy elsewhere; check with --head)")
