"""The labelling and admin web UI: a FastAPI app over the product store and the runs index.

It runs inside the Airflow UI (``plugins/prodcat_ui.py`` mounts it in the api-server
and adds a menu entry), on its own (``python -m webui``, ``make ui``) and as the
docker-compose service ``ui``. See ``webui/app.py`` for the pages.
"""
