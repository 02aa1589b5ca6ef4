"""The deployment files as data, for the tests: the Dockerfile's stages, docker/compose.yaml as
`docker-compose config` resolves it with the example environment, and the example itself."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.live import ROOT

DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
CADDYFILE = DOCKER / "Caddyfile"
ENV_EXAMPLE = DOCKER / "parley.env.example"
ENTRYPOINT = DOCKER / "entrypoint.sh"
# The blanks of the example an operator must fill in.
SECRETS = {"SECRET_KEY": secrets.token_urlsafe(50), "POSTGRES_PASSWORD": "a-database-password"}


def required_binary(name: str) -> str:
    """The path of a program the deployment tests run; CI installs it (.ci/run), so a missing one fails."""
    path = shutil.which(name)
    assert path, f"{name} is not installed: apt-get install {name} (.ci/run does in CI)"
    return path


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == instruction]


def dockerfile_stages(path: Path = DOCKERFILE) -> list[Stage]:
    """The Dockerfile's stages in order, continuation lines joined and comments left out."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")))
    stages: list[Stage] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        instruction, _, arguments = line.strip().partition(" ")
        instruction, arguments = instruction.upper(), " ".join(arguments.split())
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)(?: AS (\S+))?", arguments, flags=re.IGNORECASE)
            assert match, f"unreadable FROM line: {arguments!r}"
            stages.append(Stage(match[1], match[2] or str(len(stages))))
        elif stages:
            stages[-1].instructions.append((instruction, arguments))
    return stages


def dockerfile_env(stage: Stage) -> dict[str, str]:
    """The ENV a stage sets (KEY=value pairs; $PATH-style references left as written)."""
    env: dict[str, str] = {}
    for arguments in stage.all("ENV"):
        for pair in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", arguments):
            env[pair[0]] = pair[1].strip('"')
    return env


def env_example(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, separator, value = line.partition("=")
            assert separator, f"{path.name}: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def compose_variables(path: Path = COMPOSE) -> set[str]:
    """The variables docker/compose.yaml interpolates (`$$` is a literal dollar sign)."""
    text = path.read_text().replace("$$", "")
    return set(re.findall(r"\$\{(\w+)", text)) | set(re.findall(r"\$(\w+)", text))


def compose_config(**environ: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` of docker/compose.yaml with the example environment file."""
    env = {name: value for name, value in os.environ.items() if name not in env_example() and name not in SECRETS}
    env.update(environ)
    return subprocess.run(
        [required_binary("docker-compose"), "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def compose_model() -> dict:
    """The resolved compose file as data. docker-compose prints YAML; its own interpreter, which
    cannot run it without PyYAML, turns that into JSON (the test environment has no YAML parser)."""
    result = compose_config(**SECRETS)
    assert result.returncode == 0, result.stderr
    interpreter = Path(required_binary("docker-compose")).read_text(errors="replace").splitlines()[0].removeprefix("#!").split()
    converted = subprocess.run(
        [*interpreter, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=result.stdout, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    return json.loads(converted.stdout)
