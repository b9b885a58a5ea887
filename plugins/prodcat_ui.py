"""The Airflow plugin: the prodcat labelling and admin UI inside the Airflow UI.

The FastAPI app (``webui``) is mounted in the api-server under ``/prodcat`` and
linked from the Airflow UI's menu (``Labelling``, ``Products``, ``prodcat runs``).
Users are Airflow's (``PRODCAT_UI_AUTH=airflow`` unless set otherwise): see
``webui/auth.py`` for how their roles are decided.
"""
from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin

from webui.app import create_app
from webui.settings import UiSettings

URL_PREFIX = "/prodcat"
_env = {**os.environ, "PRODCAT_UI_AUTH": os.environ.get("PRODCAT_UI_AUTH", "airflow")}


class ProdcatUiPlugin(AirflowPlugin):
    name = "prodcat_ui"
    fastapi_apps = [  # noqa: RUF012 (Airflow reads plugins' class attributes)
        {"app": create_app(UiSettings.from_env(_env)), "url_prefix": URL_PREFIX,
         "name": "prodcat labelling and admin"}]
    external_views = [  # noqa: RUF012
        {"name": "Labelling", "href": f"{URL_PREFIX}/queue", "destination": "nav",
         "url_route": "prodcat-labelling", "category": "prodcat"},
        {"name": "Products", "href": f"{URL_PREFIX}/products", "destination": "nav",
         "url_route": "prodcat-products", "category": "prodcat"},
        {"name": "prodcat runs", "href": f"{URL_PREFIX}/runs", "destination": "nav",
         "url_route": "prodcat-runs", "category": "prodcat"},
    ]
