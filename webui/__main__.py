"""Serve the UI on its own: ``python -m webui [--host H] [--port P]`` (``make ui``)."""
from __future__ import annotations

import argparse
import logging


def main(argv=None) -> None:
    import uvicorn

    from webui.app import create_app

    parser = argparse.ArgumentParser(prog="python -m webui", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info",
                access_log=False)


if __name__ == "__main__":
    main()
