"""The deployment files hold together: the compose file resolves with the example environment and
runs what docs/deployment.md describes, Caddy accepts its configuration, the Dockerfile has the
shape the image needs, and the image's environment passes `manage.py check --deploy`."""

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from parley import healthcheck, procfile
from tests.deployment import (
    CADDYFILE,
    ENV_EXAMPLE,
    SECRETS,
    compose_config,
    compose_model,
    compose_variables,
    dockerfile_env,
    dockerfile_stages,
    env_example,
    required_binary,
)
from tests.live import ROOT

PARLEY_IMAGE = "parley:latest"


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    return compose_model()["services"]


def parley_services(services: dict[str, dict]) -> dict[str, dict]:
    return {name: service for name, service in services.items() if service.get("image") == PARLEY_IMAGE}


def command_of(service: dict) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else command


def services_running(services: dict[str, dict], entry: str) -> list[str]:
    return sorted(name for name, service in parley_services(services).items() if command_of(service)[:1] == [entry])


# --- docker/compose.yaml --------------------------------------------------------------------------


def test_the_compose_file_resolves_with_the_example_environment():
    result = compose_config(**SECRETS)
    assert result.returncode == 0, result.stderr


def test_the_compose_file_refuses_to_start_without_a_secret_key():
    result = compose_config(POSTGRES_PASSWORD="a-database-password")
    assert result.returncode != 0
    assert "set SECRET_KEY" in result.stderr


def test_the_example_environment_names_every_variable_the_compose_file_reads_and_no_other():
    example = set(env_example()) - {"COMPOSE_PROJECT_NAME"}  # read by compose itself
    assert compose_variables() == example


def test_every_variable_of_the_example_is_explained_by_a_comment_above_it():
    lines = ENV_EXAMPLE.read_text().splitlines()
    for number, line in enumerate(lines):
        if line and not line.startswith("#"):
            above = next(previous for previous in reversed(lines[:number]) if not previous.startswith(tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")))
            assert above.startswith("#"), f"{line!r} in {ENV_EXAMPLE.name} has no comment above it"


def test_the_services_are_the_database_redis_migrations_two_web_processes_workers_beat_and_the_proxy(services):
    assert set(services) == {"db", "redis", "migrate", "web1", "web2", "worker", "beat", "proxy"}
    assert services_running(services, "release") == ["migrate"]
    assert services_running(services, "web") == ["web1", "web2"]
    assert services_running(services, "worker") == ["worker"]
    assert services_running(services, "beat") == ["beat"]


def test_every_parley_service_runs_a_procfile_entry_and_every_entry_runs_somewhere(services):
    entries = procfile.entries()
    used = {command_of(service)[0] for service in parley_services(services).values()}
    assert used == set(entries)


def test_migrations_run_once_before_every_other_parley_process(services):
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    for name, service in parley_services(services).items():
        if name != "migrate":
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name


def test_beat_runs_exactly_once_and_workers_can_be_scaled(services):
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1
    worker = procfile.command("worker", {})
    assert "-B" not in worker and "--beat" not in worker  # beat is a service of its own
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]


def test_only_the_proxy_publishes_ports(services):
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"proxy"}
    assert {port["target"] for port in services["proxy"]["ports"]} == {80, 443}
    for name in ("web1", "web2"):
        assert services[name]["expose"] == ["8000"]


def test_the_proxy_sends_requests_to_every_web_service(services):
    upstreams = services["proxy"]["environment"]["PARLEY_UPSTREAMS"].split()
    assert sorted(upstreams) == [f"{name}:8000" for name in services_running(services, "web")]


def test_the_parley_services_trust_the_proxys_forwarded_headers(services):
    for name, service in parley_services(services).items():
        assert service["environment"]["BEHIND_TLS_PROXY"] == "1", name
        assert service["environment"]["PARLEY_TRUSTED_PROXIES"] == "1", name


# --- docker/Caddyfile -------------------------------------------------------------------------


def caddy(*args: str, tmp_path, **environ: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"), **environ)
    return subprocess.run([required_binary("caddy"), *args], env=env, capture_output=True, text=True, timeout=60)


def test_caddy_validates_the_proxy_configuration(tmp_path, services):
    result = caddy("validate", "--adapter", "caddyfile", "--config", str(CADDYFILE), tmp_path=tmp_path, **services["proxy"]["environment"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


def test_caddy_refuses_a_broken_configuration(tmp_path):
    broken = tmp_path / "Caddyfile"
    broken.write_text(CADDYFILE.read_text().replace("lb_policy round_robin", "lb_policy round_robin_please"))
    result = caddy("validate", "--adapter", "caddyfile", "--config", str(broken), tmp_path=tmp_path)
    assert result.returncode != 0


# --- docker/Dockerfile --------------------------------------------------------------------------


def test_the_image_is_built_in_stages_and_the_runtime_keeps_no_build_tools():
    stages = dockerfile_stages()
    assert [stage.name for stage in stages] == ["builder", "runtime"]
    builder, runtime = stages
    assert any("pip wheel" in run for run in builder.all("RUN"))
    # The runtime installs the builder's wheels from a mount, offline, and compiles nothing.
    assert any("from=builder" in run and "--no-index" in run for run in runtime.all("RUN"))
    assert not any("apt-get" in run or "gcc" in run for run in runtime.all("RUN"))


def test_the_image_runs_as_a_user_that_is_not_root():
    users = dockerfile_stages()[-1].all("USER")
    assert users, "the runtime stage sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_the_image_collects_static_files_and_checks_its_health_on_healthz():
    runtime = dockerfile_stages()[-1]
    assert any("collectstatic" in run for run in runtime.all("RUN"))
    (check,) = runtime.all("HEALTHCHECK")
    assert "parley.healthcheck" in check and healthcheck.PATH == "/healthz"
    assert runtime.all("ENTRYPOINT") == ['["/app/docker/entrypoint.sh"]']


def test_the_image_has_oci_labels_and_a_writable_place_for_metrics():
    runtime = dockerfile_stages()[-1]
    labels = " ".join(runtime.all("LABEL"))
    for label in ("org.opencontainers.image.title", "org.opencontainers.image.description", "org.opencontainers.image.version"):
        assert label in labels
    directory = dockerfile_env(runtime)["PROMETHEUS_MULTIPROC_DIR"]
    assert any("-o parley" in run and "PROMETHEUS_MULTIPROC_DIR" in run for run in runtime.all("RUN")), directory


# --- the image's environment passes the deploy check ------------------------------------------


def test_the_deploy_check_is_silent_with_the_images_environment(services, tmp_path):
    """The runtime stage's ENV with the web service's environment as compose resolves it from the
    example; only the paths inside the container and the database and Redis are this machine's."""
    env = {name: value for name, value in os.environ.items() if name in {"PATH", "HOME", "LANG", "DATABASE_URL", "REDIS_URL"}}
    env.update(dockerfile_env(dockerfile_stages()[-1]))
    env.update(services["web1"]["environment"])
    env.update(
        PATH=os.environ["PATH"],
        PARLEY_VAR_DIR=str(tmp_path / "var"),
        STATIC_ROOT=str(tmp_path / "static"),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    for folder in ("var", "metrics"):
        (tmp_path / folder).mkdir()
    for name in ("DATABASE_URL", "REDIS_URL"):  # compose's name the containers db and redis
        if name in os.environ:
            env[name] = os.environ[name]
        else:
            del env[name]
    assert env["SECRET_KEY"] == SECRETS["SECRET_KEY"] and env["DEBUG"] == "0"
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout, result.stdout + result.stderr


# --- parley.healthcheck -----------------------------------------------------------------------


class Recorder(BaseHTTPRequestHandler):
    status = 200
    seen: list[tuple[str, dict[str, str]]] = []

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        Recorder.seen.append((self.path, dict(self.headers)))
        self.send_response(Recorder.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Recorder.seen.clear()
    yield server
    server.shutdown()
    server.server_close()


def test_the_health_check_asks_healthz_as_the_site_behind_its_tls_proxy(recorder):
    environ = {"PORT": str(recorder.server_address[1]), "ALLOWED_HOSTS": ".example.com,chat.example.com", "BEHIND_TLS_PROXY": "1"}
    Recorder.status = 200
    assert healthcheck.probe(environ)[0] is True
    path, headers = Recorder.seen[-1]
    assert path == "/healthz"
    assert headers["Host"] == "chat.example.com"
    assert headers["X-Forwarded-Proto"] == "https"


@pytest.mark.parametrize("status", [301, 400, 404, 503])
def test_the_health_check_fails_on_anything_but_a_success(recorder, status):
    Recorder.status = status
    healthy, line = healthcheck.probe({"PORT": str(recorder.server_address[1])})
    assert healthy is False and str(status) in line
    assert "X-Forwarded-Proto" not in Recorder.seen[-1][1]


def test_the_health_check_fails_when_nothing_listens():
    from tests.live import free_port

    healthy, line = healthcheck.probe({"PORT": str(free_port())})
    assert healthy is False and "failed" in line
