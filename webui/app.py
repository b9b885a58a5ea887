"""The labelling and admin web app (FastAPI, server-rendered templates, a little plain JS).

Pages (``labeller``: queue, bulk, products; ``admin``: everything, runs included):

- ``/queue``: one product at a time from the store's ``label_request`` queue (at
  random when it is empty), the model's top-5 suggestions pre-selected, keyboard
  first (``1``-``5``, ``/`` search, ``n`` none of these, ``s`` skip, ``Enter``
  submit, ``u`` undo), progress;
- ``/bulk``: a page of unlabelled products predicted in one category, accepted or
  corrected at once;
- ``/products``: search by title, brand or id; ``/products/{id}``: fields, labels,
  prediction, label history; ``/products/{id}/image``: the image, read within the
  pipeline's image-fetch policy (never from anywhere else);
- ``/runs``: the runs index; ``/runs/{run_id}``: stage counts, per-class figures,
  confusion matrix, quarantine reasons, benchmark plots.

Every write is a POST with the session's CSRF token, then a redirect (a reload never
writes twice); bad input (unknown product or category, stale version, a malformed
form) gets a clear message and writes nothing.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from starlette.middleware.sessions import SessionMiddleware

from beam_pipelines import images
from webui import catalog, labelling, plots, similarity
from webui.auth import Auth, BadCsrf, Forbidden, NotLoggedIn, User, check_csrf, csrf_token
from webui.settings import UiSettings

log = logging.getLogger("prodcat.webui")
HERE = Path(__file__).parent
NONE = "__none__"
KEEP_SKIPPED, KEEP_UNDO = 40, 10
FIGURE_NAME = re.compile(r"(label_efficiency|active_learning)_[a-z0-9_]+\.png")
IMAGE_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg",
               b"GIF87a": "image/gif", b"GIF89a": "image/gif"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'self'; form-action 'self'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store"}


class BadInput(Exception):
    """A request the UI cannot act on; the message is shown, nothing is written."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def create_app(settings: UiSettings | None = None) -> FastAPI:
    settings = settings or UiSettings.from_env()
    app = FastAPI(title="prodcat labelling", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SessionMiddleware, secret_key=settings.secret, session_cookie="prodcat_ui",
                       same_site="strict", max_age=12 * 3600)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")

    @pass_context
    def href(context, route: str, /, **params) -> str:
        """A page's path (no scheme or host: right behind any proxy, and under the mount)."""
        return context["request"].url_for(route, **params).path

    templates.env.globals["href"] = href
    auth = Auth(settings)
    data = catalog.Catalog(settings.store)
    policy = images.FetchPolicy(local_roots=settings.store.image_roots, retries=0,
                                allowed_networks=settings.store.image_allowed_networks,
                                timeout=5.0, deadline=10.0)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def page(request: Request, template: str, user: User | None, status: int = 200, **context):
        flash = request.session.pop("flash", None)
        return templates.TemplateResponse(request, template, {
            "user": user, "csrf": csrf_token(request), "flash": flash, "settings": settings,
            **context}, status_code=status)

    async def require(request: Request, admin: bool = False) -> User:
        user = await auth.user(request)
        if user is None:
            raise NotLoggedIn()
        if admin and not user.is_admin:
            raise Forbidden()
        return user

    async def posted(request: Request):
        form = await request.form()
        check_csrf(request, form)
        return form

    def back(request: Request, name: str, flash: str | None = None, **params) -> RedirectResponse:
        if flash:
            request.session["flash"] = flash
        url = request.url_for(name, **params).path
        return RedirectResponse(url, status_code=303)

    @app.exception_handler(NotLoggedIn)
    async def not_logged_in(request: Request, _):
        if request.method == "GET":
            return RedirectResponse(auth.login_url(request), status_code=303)
        return page(request, "message.html", None, 401, title="Not logged in",
                    message="Your session ended: log in again. Nothing was written.")

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, _):
        return page(request, "message.html", None, 403, title="Not allowed",
                    message="Your role does not give access to this page.")

    @app.exception_handler(BadCsrf)
    async def bad_csrf(request: Request, _):
        return page(request, "message.html", await auth.user(request), 403, title="Form expired",
                    message="This form is not from your current session (CSRF check failed). "
                            "Nothing was written: reload the page and try again.")

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, err: BadInput):
        return page(request, "message.html", await auth.user(request), err.status,
                    title="Cannot do that", message=str(err))

    # -- session --------------------------------------------------------------------------
    @app.get("/healthz", include_in_schema=False)
    async def healthz():
        return {"ok": True}

    @app.get("/login", response_class=HTMLResponse, name="login_form")
    async def login_form(request: Request):
        if settings.auth == "airflow":
            return RedirectResponse(auth.login_url(request), status_code=303)
        return page(request, "login.html", None)

    @app.post("/login", name="login")
    async def login(request: Request):
        form = await posted(request)
        name, password = form.get("username"), form.get("password")
        if not isinstance(name, str) or not isinstance(password, str) \
                or auth.login(request, name, password) is None:
            request.session["flash"] = "Unknown user or wrong password."
            return RedirectResponse(request.url_for("login_form").path, status_code=303)
        return back(request, "queue")

    @app.post("/logout", name="logout")
    async def logout(request: Request):
        await posted(request)
        auth.logout(request)
        return RedirectResponse(request.url_for("login_form").path, status_code=303)

    @app.get("/", name="home")
    async def home(request: Request):
        return back(request, "queue")

    # -- the labelling queue ------------------------------------------------------------
    @app.get("/queue", response_class=HTMLResponse, name="queue")
    async def queue(request: Request):
        user = await require(request)
        skipped = tuple(request.session.get("skipped", []))
        found = labelling.next_products(data.products, 1, skip=skipped)
        product = found[0] if found else None
        return page(request, "queue.html", user, product=product,
                    suggestions=labelling.suggestions(product) if product else [],
                    categories=data.categories(), progress=labelling.progress(data.products),
                    can_undo=bool(request.session.get("undo")))

    def chosen_category(form, field_choice: str, field_text: str) -> str | None:
        """The category a form names (the search box wins over the radio), None for "none of
        these"; BadInput for an unknown one."""
        text = form.get(field_text)
        choice = text.strip() if isinstance(text, str) and text.strip() else form.get(field_choice)
        if not isinstance(choice, str) or not choice:
            raise BadInput("Choose a category (1-5 or / to search), or n for none of these.")
        if choice == NONE:
            return None
        if choice not in data.categories():
            raise BadInput(f"Unknown category {choice[:200]!r}: choose one of the list. "
                           "Nothing was written.")
        return choice

    def form_product(form, field: str = "product_id") -> str:
        product_id = form.get(field)
        if not isinstance(product_id, str) or not catalog.valid_id(product_id):
            raise BadInput("The form names no valid product id. Nothing was written.")
        return product_id

    def form_version(form, field: str = "seen_version") -> int:
        value = form.get(field)
        if not isinstance(value, str) or not value.isdigit() or len(value) > 18:
            raise BadInput("The form carries no valid label version. Nothing was written.")
        return int(value)

    def label_one(form, product_id: str, user: User) -> tuple[str | None, int, str]:
        """Write the label a one-product form asks for: ``(category, version seen, outcome)``."""
        category, version = chosen_category(form, "choice", "category"), form_version(form)
        outcome = labelling.label(data.products, {product_id: {
            "category": category, "seen_version": version}}, user.name)[product_id]
        return category, version, outcome

    @app.post("/queue/label", name="queue_label")
    async def queue_label(request: Request):
        user = await require(request)
        form = await posted(request)
        product_id = form_product(form)
        if form.get("action") == "skip":
            request.session["skipped"] = (request.session.get("skipped", []) + [product_id])[
                -KEEP_SKIPPED:]
            return back(request, "queue", f"Skipped {product_id}.")
        category, version, outcome = label_one(form, product_id, user)
        if outcome == labelling.APPLIED:
            request.session["undo"] = (request.session.get("undo", []) + [
                [product_id, version + 1]])[-KEEP_UNDO:]
            shown = category if category is not None else "none of these"
            return back(request, "queue", f"Labelled {product_id} as {shown}.")
        return back(request, "queue", f"{product_id}: {labelling.message(outcome)}. "
                                      "Nothing was written.")

    @app.post("/queue/undo", name="queue_undo")
    async def queue_undo(request: Request):
        user = await require(request)
        await posted(request)
        stack = request.session.get("undo", [])
        if not stack:
            return back(request, "queue", "Nothing to undo.")
        product_id, version = stack[-1]
        outcome = labelling.undo(data.products, product_id, version, user.name)
        request.session["undo"] = stack[:-1]
        if outcome == labelling.APPLIED:
            request.session["skipped"] = [p for p in request.session.get("skipped", [])
                                          if p != product_id]
            return back(request, "queue", f"Undone: {product_id} is back in the queue.")
        return back(request, "queue", f"{product_id}: {labelling.message(outcome)}")

    @app.get("/api/progress", name="api_progress")
    async def api_progress(request: Request):
        await require(request)
        return JSONResponse(labelling.progress(data.products))

    # -- bulk ---------------------------------------------------------------------------
    @app.get("/bulk", response_class=HTMLResponse, name="bulk")
    async def bulk(request: Request, category: str = "", page_number: int = 0):
        user = await require(request)
        categories = data.categories()
        if category and category not in categories:
            raise BadInput(f"Unknown category {category[:200]!r}.", 404)
        total, products = (labelling.predicted_in(
            data.products, category, settings.page_size, max(page_number, 0) * settings.page_size)
            if category else (0, []))
        return page(request, "bulk.html", user, category=category, categories=categories,
                    products=products, total=total, page_number=max(page_number, 0),
                    page_size=settings.page_size)

    @app.post("/bulk", name="bulk_submit")
    async def bulk_submit(request: Request):
        user = await require(request)
        form = await posted(request)
        ids = form.getlist("product_id")
        if not ids or len(ids) > 10 * settings.page_size:
            raise BadInput("The form names no products. Nothing was written.")
        todo = {}
        for product_id in ids:
            product_id = form_product({"product_id": product_id})
            if form.get(f"accept_{product_id}") != "on":
                continue
            todo[product_id] = {"category": chosen_category(form, f"choice_{product_id}",
                                                            f"category_{product_id}"),
                                "seen_version": form_version(form, f"version_{product_id}")}
        if not todo:
            return back(request, "bulk", "Nothing ticked: nothing written.")
        outcomes = labelling.label(data.products, todo, user.name)
        done = [p for p, o in outcomes.items() if o == labelling.APPLIED]
        refused = [f"{p}: {labelling.message(o)}" for p, o in outcomes.items()
                   if o != labelling.APPLIED]
        note = f"Labelled {len(done)} products." + (
            f" Not written ({len(refused)}): " + "; ".join(refused[:10]) if refused else "")
        request.session["flash"] = note
        category = form.get("category") if isinstance(form.get("category"), str) else ""
        url = request.url_for("bulk").path + (f"?category={quote(category)}" if category else "")
        return RedirectResponse(url, status_code=303)

    # -- products -------------------------------------------------------------------------
    @app.get("/products", response_class=HTMLResponse, name="products")
    async def products(request: Request, q: str = ""):
        user = await require(request)
        q = q.strip()[:200]
        return page(request, "products.html", user, q=q, results=data.search(q) if q else [])

    @app.get("/products/{product_id}", response_class=HTMLResponse, name="product")
    async def product(request: Request, product_id: str):
        user = await require(request)
        found = data.product(product_id) if catalog.valid_id(product_id) else None
        if found is None:
            raise BadInput(f"No product {product_id[:200]!r} in the store.", 404)
        shown = similarity.neighbours(found)
        documents = data.products.sources([n["id"] for n in shown]) if shown else {}
        for neighbour in shown:
            neighbour["title"] = documents.get(neighbour["id"], {}).get("title", "")
            neighbour["mine"] = next((j["similar"] for j in neighbour["judgements"]
                                      if j.get("by") == user.name), None)
        return page(request, "product.html", user, product=found, neighbours=shown,
                    suggestions=labelling.suggestions(found), categories=data.categories())

    @app.post("/products/{product_id}/similar", name="product_similar")
    async def product_similar(request: Request, product_id: str):
        user = await require(request)
        form = await posted(request)
        if not catalog.valid_id(product_id):
            raise BadInput("Not a valid product id. Nothing was written.", 404)
        neighbour = form_product(form, "neighbour")
        verdict = form.get("verdict")
        if verdict not in ("similar", "not_similar"):
            raise BadInput("Say similar or not similar. Nothing was written.")
        outcome = similarity.judge(data.products, product_id, neighbour, verdict == "similar",
                                   user.name)
        note = (f"{neighbour}: marked {verdict.replace('_', ' ')}."
                if outcome == labelling.APPLIED else f"{neighbour}: {labelling.message(outcome)}")
        return back(request, "product", note, product_id=product_id)

    @app.post("/products/{product_id}/label", name="product_label")
    async def product_label(request: Request, product_id: str):
        user = await require(request)
        form = await posted(request)
        if not catalog.valid_id(product_id):
            raise BadInput("Not a valid product id. Nothing was written.", 404)
        outcome = label_one(form, product_id, user)[2]
        return back(request, "product", labelling.message(outcome), product_id=product_id)

    @app.get("/products/{product_id}/image", name="product_image")
    async def product_image(request: Request, product_id: str):
        await require(request)
        found = data.product(product_id) if catalog.valid_id(product_id) else None
        ref = (found or {}).get("image")
        if not isinstance(ref, str) or not ref:
            return Response(status_code=404)
        try:
            body = images.read(ref, policy)
        except images.ImageError as err:
            return Response(f"image not shown: {err}", status_code=404, media_type="text/plain")
        kind = next((t for magic, t in IMAGE_TYPES.items() if body.startswith(magic)), None)
        if kind is None:
            return Response("image not shown: not a PNG, JPEG or GIF", status_code=415,
                            media_type="text/plain")
        return Response(body, media_type=kind, headers={"Cache-Control": "private, max-age=600"})

    # -- runs (admin) -------------------------------------------------------------------
    @app.get("/runs", response_class=HTMLResponse, name="runs")
    async def runs(request: Request):
        user = await require(request, admin=True)
        return page(request, "runs.html", user, runs=data.run_list())

    @app.get("/runs/{run_id}", response_class=HTMLResponse, name="run")
    async def run(request: Request, run_id: str):
        user = await require(request, admin=True)
        doc = data.run(run_id) if catalog.valid_id(run_id) else None
        if doc is None:
            raise BadInput(f"No run {run_id[:200]!r} in the runs index.", 404)
        stages = (doc.get("stats") or {}).get("stages", {})
        exclusive = stages.get("evaluate_valid", {}).get("objectives", {}).get("exclusive", {})
        rows = [r for r in doc.get("per_class", []) if r.get("model") == "model"
                and r.get("objective") == "exclusive"]
        confusion = exclusive.get("confusion")
        preprocess = stages.get("preprocess", {})
        reasons = dict(preprocess.get("quarantined_by_reason") or {})
        if preprocess.get("images_unusable"):
            reasons["image (product kept, image left out)"] = preprocess["images_unusable"]
        figures = sorted(p.name for p in settings.figures_dir.glob("*.png")
                         if FIGURE_NAME.fullmatch(p.name)) if settings.figures_dir.is_dir() else []
        return page(request, "run.html", user, run=doc, bars=plots.per_class_bars(rows) if rows
                    else "", confusion=plots.confusion_matrix(confusion["classes"],
                                                              confusion["matrix"])
                    if confusion else "", reasons=reasons, figures=figures,
                    airflow_run=doc.get("airflow_run_id"))

    @app.get("/figures/{name}", name="figure")
    async def figure(request: Request, name: str):
        await require(request, admin=True)
        path = settings.figures_dir / name
        if not FIGURE_NAME.fullmatch(name) or not path.is_file():
            return Response(status_code=404)
        return Response(path.read_bytes(), media_type="image/png")

    return app
