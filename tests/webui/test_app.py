"""The UI's pages against a real osmem store (Starlette's test client; no browser)."""
from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tests.webui.conftest import CATEGORIES, PASSWORDS
from webui import labelling, similarity, users
from webui.app import create_app


def csrf(response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', response.text).group(1)


def login(settings, name: str) -> TestClient:
    client = TestClient(create_app(settings), follow_redirects=True)
    page = client.get("/login")
    response = client.post("/login", data={"username": name, "password": PASSWORDS[name],
                                            "csrf_token": csrf(page)})
    assert response.status_code == 200 and f"{name} (" in response.text
    return client


def shown_product(response) -> tuple[str, str]:
    product_id = re.search(r'name="product_id" value="([^"]+)"', response.text).group(1)
    version = re.search(r'name="seen_version" value="(\d+)"', response.text).group(1)
    return product_id, version


def test_pages_need_a_login_and_a_right_password(ui_settings):
    client = TestClient(create_app(ui_settings), follow_redirects=False)
    response = client.get("/queue")
    assert response.status_code == 303 and response.headers["location"].endswith("/login")
    page = client.get("/login")
    wrong = client.post("/login", data={"username": "alice", "password": "nope",
                                        "csrf_token": csrf(page)}, follow_redirects=True)
    assert "Unknown user or wrong password" in wrong.text
    assert client.get("/queue").status_code == 303
    # a removed user loses access at once, whatever the cookie says
    client = login(ui_settings, "alice")
    assert client.get("/queue").status_code == 200
    users.remove(ui_settings.users_file, "alice")
    assert client.get("/queue", follow_redirects=False).status_code == 303


def test_queue_shows_the_first_request_with_suggestions_and_labels_it(ui_settings, products):
    client = login(ui_settings, "alice")
    page = client.get("/queue")
    product_id, version = shown_product(page)
    assert product_id == "p000" and version == "0"  # rank 0 of the newest request
    assert 'value="Tops &gt; Knits" data-key="1" checked' in page.text  # top-1 pre-selected
    assert "Queue left: <b id=\"queue-left\">12</b>" in page.text
    assert "&lt;script&gt;" in page.text and "<script>alert" not in page.text
    response = client.post("/queue/label", data={
        "csrf_token": csrf(page), "product_id": product_id, "seen_version": version,
        "choice": "Tops > Blouses", "action": "label"})
    assert "Labelled p000 as Tops &gt; Blouses" in response.text
    doc = products.get("p000")
    assert doc["exclusive_label"] == "Tops > Blouses" and doc["labelled_by"] == "alice"
    assert doc["label_source"] == "margin+diverse" and doc["label_version"] == 1
    assert doc["label_history"][-1]["previous"]["exclusive_label"] == ""
    assert shown_product(response)[0] == "p001"  # the next one
    assert labelling.progress(products) == {"queue_left": 11, "labelled_today": 1,
                                            "per_person": {"alice": 1}}


def test_a_write_without_the_sessions_csrf_token_writes_nothing(ui_settings, products):
    client = login(ui_settings, "alice")
    for token in ("", "forged"):
        response = client.post("/queue/label", data={
            "csrf_token": token, "product_id": "p000", "seen_version": "0",
            "choice": "Dresses", "action": "label"})
        assert response.status_code == 403 and "CSRF" in response.text
    assert not products.get("p000")["exclusive_label"]


@pytest.mark.parametrize("form, message", [
    ({"product_id": "p000", "seen_version": "0", "choice": "Shoes"}, "Unknown category"),
    ({"product_id": "p000", "seen_version": "0", "category": "Tops > Knit"}, "Unknown category"),
    ({"product_id": "p000", "seen_version": "x", "choice": "Dresses"}, "no valid label version"),
    ({"product_id": "../etc", "seen_version": "0", "choice": "Dresses"}, "no valid product id"),
    ({"product_id": "p000", "seen_version": "0"}, "Choose a category"),
])
def test_bad_forms_get_a_clear_message_and_nothing_is_written(ui_settings, products, form,
                                                               message):
    client = login(ui_settings, "alice")
    page = client.get("/queue")
    response = client.post("/queue/label", data={"csrf_token": csrf(page), "action": "label",
                                                 **form})
    assert response.status_code == 400 and message in response.text
    assert not products.get("p000")["exclusive_label"]


def test_an_unknown_product_is_refused(ui_settings):
    client = login(ui_settings, "alice")
    page = client.get("/queue")
    response = client.post("/queue/label", data={
        "csrf_token": csrf(page), "product_id": "nope", "seen_version": "0",
        "choice": "Dresses", "action": "label"})
    assert "no such product" in response.text and "Nothing was written" in response.text
    assert client.get("/products/nope").status_code == 404


def test_two_people_labelling_one_product_the_second_gets_a_conflict(ui_settings, products):
    alice, bob = login(ui_settings, "alice"), login(ui_settings, "bob")
    alice_page, bob_page = alice.get("/queue"), bob.get("/queue")
    assert shown_product(alice_page) == shown_product(bob_page) == ("p000", "0")
    alice.post("/queue/label", data={"csrf_token": csrf(alice_page), "product_id": "p000",
                                     "seen_version": "0", "choice": "Dresses", "action": "label"})
    response = bob.post("/queue/label", data={"csrf_token": csrf(bob_page), "product_id": "p000",
                                              "seen_version": "0", "choice": "Jackets",
                                              "action": "label"})
    assert "conflict: labelled by alice at" in response.text
    assert "Nothing was written" in response.text
    doc = products.get("p000")
    assert doc["exclusive_label"] == "Dresses" and doc["labelled_by"] == "alice"
    assert len(doc["label_history"]) == 1


def test_undo_restores_the_product_and_its_place_in_the_queue(ui_settings, products):
    client = login(ui_settings, "alice")
    page = client.get("/queue")
    client.post("/queue/label", data={"csrf_token": csrf(page), "product_id": "p000",
                                      "seen_version": "0", "choice": "__none__",
                                      "action": "label"})
    assert products.get("p000")["label_none"] is True
    response = client.post("/queue/undo", data={"csrf_token": csrf(page)})
    assert "Undone: p000 is back in the queue" in response.text
    assert shown_product(response) == ("p000", "2")
    doc = products.get("p000")
    assert doc["exclusive_label"] == "" and doc["labelled_at"] is None
    assert [h["action"] for h in doc["label_history"]] == ["label", "undo"]
    assert "Nothing to undo" in client.post("/queue/undo", data={"csrf_token": csrf(page)}).text


def test_undo_never_removes_someone_elses_later_label(ui_settings, products):
    alice, bob = login(ui_settings, "alice"), login(ui_settings, "bob")
    page = alice.get("/queue")
    alice.post("/queue/label", data={"csrf_token": csrf(page), "product_id": "p000",
                                     "seen_version": "0", "choice": "Dresses", "action": "label"})
    bob_page = bob.get("/products/p000")
    bob.post("/products/p000/label", data={"csrf_token": csrf(bob_page), "seen_version": "1",
                                           "category": "Jackets"})
    response = alice.post("/queue/undo", data={"csrf_token": csrf(page)})
    assert "nothing undone" in response.text
    assert products.get("p000")["exclusive_label"] == "Jackets"


def test_skip_moves_on_and_an_empty_queue_draws_at_random(ui_settings, products):
    client = login(ui_settings, "alice")
    page = client.get("/queue")
    response = client.post("/queue/label", data={"csrf_token": csrf(page), "product_id": "p000",
                                                 "seen_version": "0", "action": "skip"})
    assert "Skipped p000" in response.text and shown_product(response)[0] == "p001"
    assert not products.get("p000")["exclusive_label"]
    drawn = labelling.next_products(products, 5, skip=tuple(f"p{i:03d}" for i in range(12)))
    assert len(drawn) == 5 and not any(p["from_queue"] for p in drawn)
    assert all(int(p["id"][1:]) >= 12 for p in drawn)


def test_bulk_accepts_and_corrects_the_ticked_products_only(ui_settings, products):
    client = login(ui_settings, "alice")
    page = client.get("/bulk", params={"category": "Dresses"})
    shown = re.findall(r'name="product_id" value="([^"]+)"', page.text)
    assert shown and all(products.get(p)["prediction"]["exclusive"]["category"] == "Dresses"
                         for p in shown)
    first, second, third = shown[:3]
    form = {"csrf_token": csrf(page), "category": "Dresses", "product_id": [first, second, third],
            "accept_" + first: "on", "accept_" + second: "on",
            "choice_" + first: "Dresses", "choice_" + second: "Jackets",
            "choice_" + third: "Dresses"}
    for p in (first, second, third):
        form["version_" + p] = "0"
    response = client.post("/bulk", data=form)
    assert "Labelled 2 products" in response.text
    assert products.get(first)["exclusive_label"] == "Dresses"
    assert products.get(second)["exclusive_label"] == "Jackets"
    assert not products.get(third)["exclusive_label"]
    assert client.get("/bulk", params={"category": "Shoes"}).status_code == 404


def test_runs_are_for_admins_and_show_the_runs_figures(ui_settings):
    alice = login(ui_settings, "alice")
    assert alice.get("/runs").status_code == 403
    assert alice.get("/runs/r1").status_code == 403
    root = login(ui_settings, "root")
    runs = root.get("/runs")
    assert "r1" in runs.text and "0.520" in runs.text and "0.470" in runs.text
    run = root.get("/runs/r1")
    assert run.status_code == 200
    assert run.text.count("<svg") == 2 and "true Dresses, predicted Bottoms &gt; Jeans: 1" in run.text
    assert "bad_json" in run.text and "manual__2026-11-21" in run.text
    assert "label_efficiency_reviews.png" in run.text
    assert root.get("/figures/label_efficiency_reviews.png").content.startswith(b"\x89PNG")
    assert root.get("/figures/..%2Fusers.json").status_code == 404
    assert root.get("/runs/nope").status_code == 404


def test_images_are_served_only_within_the_fetch_policy(ui_settings, products, tmp_path):
    client = login(ui_settings, "alice")
    response = client.get("/products/p001/image")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    secret = tmp_path / "ui" / "secret"
    for ref, reason in ((str(secret), "outside the allowed image directories"),
                        ("http://169.254.169.254/latest/meta-data/", "refused"),
                        ("relative/path.png", "relative path")):
        products.update_partial([("p001", {"image": ref})])
        products.refresh()
        response = client.get("/products/p001/image")
        assert response.status_code == 404 and reason in response.text
    assert client.get("/products/p039/image").status_code == 200


def test_search_product_page_and_headers(ui_settings):
    client = login(ui_settings, "alice")
    found = client.get("/products", params={"q": "p007"})
    assert 'href="/products/p007"' in found.text
    page = client.get("/products/p007")
    assert "Product 7 soft cotton" in page.text and CATEGORIES[1] .replace(">", "&gt;") in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "alice-password" not in page.text


def test_passwords_are_hashed_and_checked(tmp_path):
    path = tmp_path / "users.json"
    users.add(path, "carol", "admin", "a long password")
    assert "a long password" not in path.read_text()
    assert users.authenticate(path, "carol", "a long password") == "admin"
    assert users.authenticate(path, "carol", "wrong password") is None
    assert users.authenticate(path, "nobody", "a long password") is None
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(users.UserError, match="user name"):
        users.add(path, "<script>", "admin", "a long password")
    with pytest.raises(users.UserError, match="at least"):
        users.add(path, "dave", "admin", "short")
    path.write_text("[1, 2]")
    with pytest.raises(users.UserError, match="not a map"):
        users.load(path)


def test_runs_link_to_tensorboard_only_when_one_is_configured(ui_settings):
    import dataclasses

    assert "TensorBoard</a>" not in login(ui_settings, "root").get("/runs").text
    with_board = dataclasses.replace(ui_settings, tensorboard_url="http://board:6006")
    root = login(with_board, "root")
    assert 'href="http://board:6006/?regexInput=r1"' in root.get("/runs").text
    assert 'href="http://board:6006/?regexInput=r1"' in root.get("/runs/r1").text


def test_repeated_failed_logins_lock_the_name_out(ui_settings):
    client = TestClient(create_app(ui_settings), follow_redirects=True)
    token = csrf(client.get("/login"))
    for _ in range(5):
        client.post("/login", data={"username": "alice", "password": "guess",
                                    "csrf_token": token})
    # the right password no longer works for a while; another name is not affected
    response = client.post("/login", data={"username": "alice",
                                            "password": PASSWORDS["alice"], "csrf_token": token})
    assert "Unknown user or wrong password" in response.text
    assert client.get("/queue", follow_redirects=False).status_code == 303
    response = client.post("/login", data={"username": "bob", "password": PASSWORDS["bob"],
                                            "csrf_token": token})
    assert "bob (labeller)" in response.text


def test_neighbours_are_shown_and_judged_into_triplets(ui_settings, products):
    client = login(ui_settings, "alice")
    page = client.get("/products/p000")
    assert 'id="neighbours"' in page.text and "Product 2 soft cotton" in page.text
    assert 'src="/products/p001/image"' in page.text
    token = csrf(page)
    for neighbour, verdict in (("p001", "similar"), ("p002", "not_similar"),
                               ("p003", "similar")):
        done = client.post("/products/p000/similar", data={
            "csrf_token": token, "neighbour": neighbour, "verdict": verdict})
        assert f"{neighbour}: marked {verdict.replace('_', ' ')}" in done.text
    assert sorted(similarity.triplets(products)) == [("p000", "p001", "p002"),
                                                    ("p000", "p003", "p002")]
    # a second verdict by the same person replaces the first
    client.post("/products/p000/similar", data={"csrf_token": token, "neighbour": "p003",
                                                "verdict": "not_similar"})
    assert sorted(similarity.triplets(products)) == [("p000", "p001", "p002"),
                                                    ("p000", "p001", "p003")]
    before = products.get("p000")
    for form, message in (({"neighbour": "p020", "verdict": "similar"}, "not among"),
                          ({"neighbour": "p001", "verdict": "maybe"}, "similar or not"),
                          ({"neighbour": "../x", "verdict": "similar"}, "no valid product")):
        refused = client.post("/products/p000/similar", data={"csrf_token": token, **form})
        assert message in refused.text
    assert client.post("/products/p000/similar", data={"neighbour": "p001",
                                                       "verdict": "similar"}).status_code == 403
    assert products.get("p000")["similarity_judgements"] == before["similarity_judgements"]
