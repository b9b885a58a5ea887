"""End to end in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium) against the running app and the real osmem store.

Screenshots of every page go to ``PRODCAT_TEST_ARTEFACTS`` (``.prodcat/test-artefacts``
by default) under ``webui/``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from tests.webui.conftest import PASSWORDS
from webui.app import create_app

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTEFACTS = Path(os.environ.get("PRODCAT_TEST_ARTEFACTS") or Path(__file__).resolve().parents[2]
                 / ".prodcat" / "test-artefacts") / "webui"


@pytest.fixture
def server(ui_settings):
    """The app served by uvicorn in a thread on a free port: its base URL."""
    from local_stack.services import free_port

    port = free_port()
    config = uvicorn.Config(create_app(ui_settings), host="127.0.0.1", port=port,
                            log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    for _ in range(100):
        if running.started:
            break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(10)


@contextlib.contextmanager
def browser():
    """A headless Chromium, quit on leaving. Its temporary files (profile, singleton socket)
    go to a directory of its own, removed after it, not to the system's temporary directory,
    where quitting leaves some (a short path: the socket's must fit a Unix socket's 108 bytes)."""
    if not (CHROMIUM and DRIVER):
        pytest.fail("these tests need Debian's chromium and chromium-driver: run `make install`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", "--disable-gpu"):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="prodcat-chromium-") as temp_dir:
        driver = webdriver.Chrome(options=options, service=Service(
            DRIVER, env={**os.environ, "TMPDIR": temp_dir}))
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture
def browsers():
    with contextlib.ExitStack() as opened:
        yield lambda: opened.enter_context(browser())


def shot(driver, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTEFACTS / f"{name}.png"))


def log_in(driver, base: str, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/queue")
    assert driver.current_url.endswith("/login")
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[name])
    driver.find_element(By.ID, "login").click()
    wait_for(driver, lambda d: d.current_url.endswith("/queue"))


def wait_for(driver, condition, timeout: float = 15):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def loaded(driver) -> bool:
    """The page has finished loading: its scripts ran, so the keys have their listener (a
    key sent while a submitted form's next page is still loading would be lost)."""
    return driver.execute_script("return document.readyState") == "complete"


def keys(driver, *pressed) -> None:
    """Key presses sent to the page (the focused element), nothing clicked, once it has
    loaded."""
    from selenium.webdriver.common.action_chains import ActionChains

    wait_for(driver, loaded)
    chain = ActionChains(driver)
    for key in pressed:
        chain.send_keys(key)
    chain.perform()


def text(driver, element_id: str) -> str:
    """The element's text, or "" while there is none (the page may be changing)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        found = driver.find_elements(By.ID, element_id)
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def test_label_ten_with_the_keyboard_undo_and_a_conflict(server, browsers, products):
    from selenium.webdriver.common.keys import Keys

    alice = browsers()
    log_in(alice, server, "alice")
    shot(alice, "queue")
    # Ten products, keyboard only: the pre-selected suggestion, another one, none of
    # these, and a category found with "/".
    plan = [("Enter",), ("2", "Enter"), ("n", "Enter"), ("/", "Jackets", Keys.ENTER)]
    expected = {}
    for i in range(10):
        product_id = text(alice, "product-id")
        presses = plan[i % len(plan)]
        suggestions = [e.get_attribute("value") for e in alice.find_elements(
            "css selector", "input[data-key]")]
        expected[product_id] = {("Enter",): suggestions[0], ("2", "Enter"): suggestions[1],
                                ("n", "Enter"): None}.get(presses, "Jackets")
        keys(alice, *[Keys.ENTER if k == "Enter" else k for k in presses])
        wait_for(alice, lambda d, p=product_id: f"Labelled {p} as" in text(d, "flash"))
    assert len(expected) == 10
    # undo the last one with "u": it comes back to the queue
    undone = product_id
    keys(alice, "u")
    wait_for(alice, lambda d: f"Undone: {undone}" in text(d, "flash"))
    assert text(alice, "product-id") == undone
    assert products.get(undone)["labelled_at"] is None
    del expected[undone]
    # a second session opens the same product; the first labels it; the second is told
    bob = browsers()
    log_in(bob, server, "bob")
    contested = text(bob, "product-id")
    assert contested == text(alice, "product-id")
    keys(alice, Keys.ENTER)
    wait_for(alice, lambda d: f"Labelled {contested}" in text(d, "flash"))
    keys(bob, "2", Keys.ENTER)
    wait_for(bob, lambda d: "conflict" in text(d, "flash"))
    assert "labelled by alice" in text(bob, "flash") and "Nothing was written" in text(bob, "flash")
    shot(bob, "conflict")
    # the store holds exactly what was chosen, by alice
    for product_id, category in expected.items():
        doc = products.get(product_id)
        assert doc["labelled_by"] == "alice", product_id
        assert doc["exclusive_label"] == category, product_id
        assert doc["label_none"] is (category is None)
        assert doc["label_source"] == "margin+diverse"
    # the undone product came back first, so it is the contested one: labelled, undone,
    # labelled again by alice; bob's answer is nowhere
    assert contested == undone
    doc = products.get(contested)
    assert doc["labelled_by"] == "alice"
    assert [(h["action"], h["by"]) for h in doc["label_history"]] == [
        ("label", "alice"), ("undo", "alice"), ("label", "alice")]


def test_every_page_renders_in_the_browser(server, browsers):
    from selenium.webdriver.common.by import By

    root = browsers()
    log_in(root, server, "root")
    for name, path, marker in (
            ("bulk", "/bulk?category=Dresses", "bulk-form"),
            ("products", "/products?q=cotton", "product-search"),
            ("product", "/products/p003", "current-label"),
            ("runs", "/runs", "runs"),
            ("run", "/runs/r1", "confusion")):
        root.get(server + path)
        assert root.find_elements(By.ID, marker), name
        shot(root, name)
    # the image loads (naturalWidth > 0 once decoded) under the page's CSP
    root.get(server + "/products/p003")
    image = root.find_element(By.CSS_SELECTOR, "img.thumb")
    wait_for(root, lambda d: d.execute_script("return arguments[0].naturalWidth", image) > 0)
    # the run page's SVG figures are in the page, not blocked
    root.get(server + "/runs/r1")
    assert len(root.find_elements(By.CSS_SELECTOR, "#confusion svg rect")) == 36
    assert not [e for e in root.get_log("browser") if e["level"] == "SEVERE"]
