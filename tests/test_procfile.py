"""The Procfile is the one description of Parley's processes: parley/procfile.py reads it, and
`bin/parley run`, the image's entrypoint, compose (tests/test_deployment_files.py) and the docs
take their processes from it, so none of them can drift from it."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parley import procfile
from tests.deployment import ENTRYPOINT
from tests.live import ROOT, child_env, free_port

ENTRIES = ["release", "web", "worker", "beat"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "Procfile"
    path.write_text(text)
    return path


# --- parley/procfile.py --------------------------------------------------------------------------


def test_the_procfile_lists_the_release_web_worker_and_beat_processes():
    assert list(procfile.entries()) == ENTRIES


def test_a_variable_comes_from_the_environment_or_its_default():
    assert procfile.command("web", {})[-5:] == ["-b", "127.0.0.1", "-p", "8000", "parley.asgi:application"]
    assert procfile.command("web", {"HOST": "0.0.0.0", "PORT": "9000"})[-5:] == ["-b", "0.0.0.0", "-p", "9000", "parley.asgi:application"]
    assert procfile.command("web", {"PORT": ""})[-2] == "8000"  # empty counts as unset, as in ${PORT:-8000}


def test_an_expanded_value_is_split_like_a_shell_would(tmp_path):
    path = write(tmp_path, "run: tool ${OPTIONS:-} --last\n")
    assert procfile.command("run", {"OPTIONS": "-a 'b c'"}, path) == ["tool", "-a", "b c", "--last"]
    assert procfile.command("run", {}, path) == ["tool", "--last"]


def test_a_variable_without_a_default_must_be_set(tmp_path):
    path = write(tmp_path, "run: tool ${NEEDED}\n")
    with pytest.raises(procfile.ProcfileError, match="needs the variable NEEDED"):
        procfile.command("run", {}, path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# only a comment\n", "has no entries"),
        ("web python -m x\n", "line 1: expected `name: command`"),
        ("web: a\nweb: b\n", "line 2: the entry 'web' is defined twice"),
        ("web:\n", "line 1: expected `name: command`"),
    ],
)
def test_a_malformed_procfile_is_refused_with_the_line(tmp_path, text, message):
    with pytest.raises(procfile.ProcfileError, match=re.escape(message)):
        procfile.entries(write(tmp_path, text))


def test_an_unknown_entry_is_named_with_the_known_ones():
    with pytest.raises(procfile.ProcfileError, match="no entry 'wbe'; it has release, web, worker, beat"):
        procfile.command("wbe", {})


def test_the_command_line_answers_whether_an_entry_exists():
    run = [sys.executable, "-m", "parley.procfile"]
    assert subprocess.run([*run, "--has", "beat"], cwd=ROOT).returncode == 0
    assert subprocess.run([*run, "--has", "nope"], cwd=ROOT).returncode == 1
    unknown = subprocess.run([*run, "nope"], cwd=ROOT, capture_output=True, text=True)
    assert unknown.returncode == 2 and "no entry 'nope'" in unknown.stderr


# --- the processes that start them ------------------------------------------------------------


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def as_started(args: list[str]) -> list[str]:
    """A command line as the Procfile writes it: a script's interpreter left out, the program by name."""
    if len(args) > 1 and Path(args[0]).name.startswith("python") and not args[1].startswith("-"):
        args = args[1:]
    return [Path(args[0]).name, *args[1:]]


def wait_for_port(process: subprocess.Popen, port: int, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listened on {port}:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_bin_parley_run_starts_the_procfiles_web_worker_and_beat(tmp_path):
    port = free_port()
    env = child_env(HOST="127.0.0.1", PORT=str(port), PARLEY_VAR_DIR=str(tmp_path / "var"))
    log = tmp_path / "run.log"
    with open(log, "wb") as output:
        run = subprocess.Popen(
            [sys.executable, "-m", "parley.devserver"], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_port(run, port, log)
        started = sorted(as_started(cmdline(pid)) for pid in children_of(run.pid))
        expected = sorted(as_started(procfile.command(name, env)) for name in ("web", "worker", "beat"))
        assert started == expected, log.read_text()[-3000:]
    finally:
        stop(run)
    assert run.returncode == 0, log.read_text()[-3000:]


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_the_images_web_role_runs_the_procfiles_web_entry(tmp_path):
    port = free_port()
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "counter_1.db").write_bytes(b"stale")
    env = child_env(
        HOST="127.0.0.1", PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(metrics),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    )  # fmt: skip
    log = tmp_path / "web.log"
    with open(log, "wb") as output:
        web = subprocess.Popen(["sh", str(ENTRYPOINT), "web"], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(web, port, log)
        assert cmdline(web.pid) == procfile.command("web", env)  # the entrypoint exec'd it in place
        assert not (metrics / "counter_1.db").exists()  # a new run starts with no stale metrics
    finally:
        stop(web)


def test_the_entrypoint_runs_anything_else_as_given_and_lists_no_roles_of_its_own():
    result = subprocess.run(["sh", str(ENTRYPOINT), "echo", "as", "given"], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])))
    assert result.returncode == 0 and result.stdout == "as given\n", result.stderr
    script = ENTRYPOINT.read_text()
    assert "parley.procfile" in script
    for name in ENTRIES:
        assert not re.search(rf"^\s*{name}\)", script, flags=re.MULTILINE), f"entrypoint.sh handles {name} itself"


# --- the docs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", ["README.md", "docs/deployment.md"])
def test_the_docs_describe_each_procfile_entry(doc):
    text = (ROOT / doc).read_text()
    assert "Procfile" in text
    for name in procfile.entries():
        assert f"`{name}`" in text, f"{doc} does not mention the Procfile's `{name}`"
