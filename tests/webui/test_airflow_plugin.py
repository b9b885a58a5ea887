"""The plugin in a real Airflow api-server: the menu entries are there, the pages answer
for Airflow's user, and nobody else gets in."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from local_stack.services import free_port

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = Path(sys.executable).with_name("airflow")


@pytest.fixture
def api_server(ui_settings, tmp_path):
    home = tmp_path / "airflow"
    home.mkdir()
    env = {**os.environ, **ui_settings.store.as_env(), "AIRFLOW_HOME": str(home),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "no-dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
           "PYTHONPATH": str(ROOT), "PRODCAT_UI_AUTH": "airflow",
           "PRODCAT_UI_DIR": os.environ["PRODCAT_UI_DIR"],
           "PRODCAT_IMAGE_ROOTS": os.environ["PRODCAT_IMAGE_ROOTS"]}
    migrated = Path(os.environ.get("AIRFLOW_HOME", "")) / "airflow.db"
    if migrated.is_file():  # the database `make install` migrated: a copy is quicker
        shutil.copy(migrated, home / "airflow.db")
    else:
        subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    port = free_port()
    with open(tmp_path / "api-server.log", "w") as log:
        process = subprocess.Popen([AIRFLOW, "api-server", "--port", str(port), "--host",
                                    "127.0.0.1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/api/v2/monitor/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(1)
    else:
        process.terminate()
        pytest.fail("the api-server did not answer in 120 s: "
                    + (tmp_path / "api-server.log").read_text()[-3000:])
    if process.poll() is not None:
        pytest.fail("the api-server stopped: " + (tmp_path / "api-server.log").read_text()[-3000:])
    yield base
    process.terminate()
    process.wait(30)


def test_the_plugin_is_in_the_menu_and_its_pages_answer(api_server):
    anonymous = httpx.Client(base_url=api_server, timeout=30)
    # no Airflow session: sent to Airflow's login, nothing shown
    response = anonymous.get("/prodcat/queue")
    assert response.status_code == 303 and "/auth/" in response.headers["location"]
    # an Airflow session (all-admins mode logs in with no password)
    client = httpx.Client(base_url=api_server, timeout=30, follow_redirects=True)
    client.get("/auth/token/login")
    assert "_token" in client.cookies
    plugins = client.get("/api/v2/plugins").json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "prodcat_ui")
    assert {v["name"]: v["href"] for v in ours["external_views"]} == {
        "Labelling": "/prodcat/queue", "Products": "/prodcat/products",
        "prodcat runs": "/prodcat/runs"}
    assert ours["fastapi_apps"][0]["url_prefix"] == "/prodcat"
    queue = client.get("/prodcat/queue")
    assert queue.status_code == 200 and 'id="product-id">p000<' in queue.text
    assert "(admin)" in queue.text  # Airflow's admin is the UI's admin
    assert 'href="/prodcat/runs"' in queue.text  # links stay under the mount
    assert client.get("/prodcat/runs/r1").status_code == 200
    # the DAG run's link stays in this Airflow
    assert 'href="/dags/catalog_train/runs/manual__2026-11-21"' in client.get("/prodcat/runs").text
    assert client.get("/prodcat/products/p001/image").headers["content-type"] == "image/png"


def test_the_airflow_ui_shows_the_menu_and_opens_the_queue_in_it(api_server):
    from selenium.webdriver.common.by import By

    from tests.webui.test_browser import browser, shot, wait_for

    with browser() as driver:
        driver.get(api_server + "/auth/token/login")  # all-admins mode: a session, no password
        # the menu: Plugins > prodcat > Labelling
        wait_for(driver, lambda d: d.find_elements(
            By.XPATH, "//button[normalize-space()='Plugins']"), 60)[0].click()
        wait_for(driver, lambda d: d.find_elements(
            By.XPATH, "//*[@role='menuitem'][normalize-space()='prodcat']"))[0].click()
        link = wait_for(driver, lambda d: d.find_elements(
            By.XPATH, "//*[@role='menuitem'][normalize-space()='Labelling']"))
        assert driver.find_elements(By.XPATH, "//*[@role='menuitem'][normalize-space()='Products']")
        shot(driver, "airflow_menu")
        link[0].click()
        frame = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "iframe"), 30)[0]
        assert frame.get_attribute("src").endswith("/prodcat/queue")
        driver.switch_to.frame(frame)
        wait_for(driver, lambda d: d.find_elements(By.ID, "product-id"), 30)
        assert driver.find_element(By.ID, "product-id").text == "p000"
        driver.switch_to.default_content()
        shot(driver, "airflow_labelling")
