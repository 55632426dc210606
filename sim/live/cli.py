"""`floodgate serve` and `floodgate validate`; FastAPI, uvicorn and Locust load lazily."""

from __future__ import annotations


def add_parsers(subparsers) -> None:
    from sim.live import serve, validate

    serve.add_parser(subparsers)
    validate.add_parser(subparsers)
