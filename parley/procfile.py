"""The Procfile at the repository root: Parley's processes, described once.

`bin/parley run` (parley/devserver.py), the container image's roles (docker/entrypoint.sh) and the
docs take each process's command from there, so they cannot drift apart. A line is `name: command`;
`${NAME:-default}` in a command is the variable NAME from the environment, or the default when NAME
is unset or empty, and `${NAME}` must be set. The expanded line is split like a shell would
(shlex), so a value with spaces gives several arguments.

    python -m parley.procfile NAME [ARGS...]   run entry NAME (ARGS appended), replacing this process
    python -m parley.procfile --has NAME       exit 0 if NAME is an entry, 1 if not
    python -m parley.procfile --print NAME     print the expanded command, one argument a line
    python -m parley.procfile --list           print the entries' names

Only the standard library here: the entrypoint asks `--has` on every start.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"
_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9_-]+):[ \t]*(?P<command>\S.*)$")
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


class ProcfileError(ValueError):
    """A Procfile that cannot be read, an unknown entry, or a variable that is not set."""


def entries(path: Path = PROCFILE) -> dict[str, str]:
    """Each entry's name and its command as written, in the file's order."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProcfileError(f"Cannot read the Procfile at {path}: {exc.strerror}") from exc
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENTRY.match(stripped)
        if match is None:
            raise ProcfileError(f"{path}, line {number}: expected `name: command`, found {stripped!r}")
        if match["name"] in found:
            raise ProcfileError(f"{path}, line {number}: the entry {match['name']!r} is defined twice")
        found[match["name"]] = match["command"].strip()
    if not found:
        raise ProcfileError(f"{path} has no entries")
    return found


def expand(command: str, environ: Mapping[str, str]) -> str:
    """`${NAME:-default}` and `${NAME}` replaced from `environ`."""

    def value(match: re.Match[str]) -> str:
        name, default = match["name"], match["default"]
        found = environ.get(name, "")
        if found:
            return found
        if default is None:
            raise ProcfileError(f"The Procfile's command {command!r} needs the variable {name} to be set")
        return default

    return _VARIABLE.sub(value, command)


def variables(command: str) -> dict[str, str | None]:
    """The variables a command reads, with their defaults (None: no default)."""
    return {match["name"]: match["default"] for match in _VARIABLE.finditer(command)}


def command(name: str, environ: Mapping[str, str] | None = None, path: Path = PROCFILE) -> list[str]:
    """The arguments of entry `name`, expanded against `environ` (the process's by default)."""
    known = entries(path)
    if name not in known:
        raise ProcfileError(f"The Procfile has no entry {name!r}; it has {', '.join(known)}")
    args = shlex.split(expand(known[name], os.environ if environ is None else environ))
    if not args:
        raise ProcfileError(f"The Procfile's entry {name!r} expands to nothing")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if not argv or argv[0] in {"-h", "--help"}:
            print(__doc__)
            return 0 if argv else 2
        if argv[0] == "--list":
            print("\n".join(entries()))
            return 0
        if argv[0] == "--has" and len(argv) == 2:
            return 0 if argv[1] in entries() else 1
        if argv[0] == "--print" and len(argv) == 2:
            print("\n".join(command(argv[1])))
            return 0
        if argv[0].startswith("-"):
            raise ProcfileError(f"Unknown option {argv[0]!r}; see --help")
        args = [*command(argv[0]), *argv[1:]]
    except ProcfileError as exc:
        print(f"procfile: {exc}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    try:
        os.execvp(args[0], args)
    except OSError as exc:
        print(f"procfile: cannot run {args[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
