"""Offline checks of the production stack: no Docker engine runs here, so check
what can be checked without one — the compose file, the files it needs, hadolint."""
from __future__ import annotations

import ast
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
                 "airflow-dag-processor", "airflow-triggerer", "updater", "trainer-gpu", "ui"):
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


def _module_file(name: str) -> Path | None:
    """The repository's file for a module name (the DAG folder is on the path too)."""
    for base in (ROOT, ROOT / "dags"):
        target = base.joinpath(*name.split("."))
        if (target / "__init__.py").is_file():
            return target / "__init__.py"
        if target.with_suffix(".py").is_file():
            return target.with_suffix(".py")
    return None


def imported_modules(entry_points: list[str]) -> set[str]:
    """Every module of this repository the entry points import, however deep, including
    imports inside functions (read from the source, nothing is imported)."""
    seen, todo = set(), list(entry_points)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        source = _module_file(name)
        assert source is not None, f"no module {name}"
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            todo.extend(n for n in names if _module_file(n) is not None and n not in seen)
    return seen


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_every_package_its_entry_points_import(dockerfile):
    text = dockerfile.read_text()
    entry_points = re.search(r'LABEL org\.prodcat\.entrypoints="([^"]+)"', text).group(1).split()
    copied = {Path(m.group(1)).parts[0] for m in re.finditer(
        r"^COPY\s+(?:--\S+\s+)*(\S+)\s+\S+$", text, re.MULTILINE)}
    for module in imported_modules(entry_points):
        source = _module_file(module).relative_to(ROOT)
        assert source.parts[0] in copied, f"{dockerfile.name} runs code that imports {module} " \
                                          f"({source}) but does not copy {source.parts[0]}/"


def test_the_import_check_sees_a_package_an_image_would_lack():
    # catalog_data (the demo data) is in no image: an entry point that imported it would fail
    assert "catalog_data.rules" in imported_modules(["local_stack.demo"])
    assert not any(m.startswith("catalog_data") for m in imported_modules(["trainer.controller"]))
