"""Offline checks of the production stack: no Docker engine runs here, so check
what can be checked without one — the compose file, the files it needs, hadolint."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))


def test_compose_declares_the_production_services():
    services = COMPOSE["services"]
    for name in ("elasticsearch", "rabbitmq", "postgres", "airflow-apiserver", "airflow-scheduler",
                 "airflow-dag-processor", "airflow-triggerer", "updater", "trainer-gpu"):
        assert name in services, name
    assert "15672:15672" in services["rabbitmq"]["ports"]  # management UI
    gpu = services["trainer-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


@pytest.mark.parametrize("name", sorted(COMPOSE["services"]))
def test_every_service_has_an_image_or_an_existing_build(name):
    service = COMPOSE["services"][name]
    assert "image" in service or "build" in service
    if "build" in service:
        context = ROOT / service["build"]["context"]
        assert context.is_dir()
        assert (context / service["build"]["dockerfile"]).is_file()


@pytest.mark.parametrize("name", sorted(COMPOSE["services"]))
def test_named_volumes_and_dependencies_are_declared(name):
    service = COMPOSE["services"][name]
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if not source.startswith((".", "/")):
            assert source in COMPOSE["volumes"], source
    for dependency in service.get("depends_on", {}):
        assert dependency in COMPOSE["services"]


def test_stages_are_configured_for_the_elasticsearch_client():
    env = COMPOSE["services"]["updater"]["environment"]
    assert env["PRODCAT_STORE_BACKEND"] == "elasticsearch"
    assert env["PRODCAT_STORE_URL"].startswith("http://elasticsearch:")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_only_files_that_exist(dockerfile):
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"COPY\s+(?:--\S+\s+)*(\S+)\s+\S+$", line.strip())
        if match:
            assert (ROOT / match.group(1)).exists(), f"{dockerfile.name}: {line}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
