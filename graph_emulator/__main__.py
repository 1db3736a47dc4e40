"""``python -m graph_emulator --host 127.0.0.1 --port 8765 [--seed FILE]``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from .app import create_app
from .config import EmulatorConfig
from .seed import DEMO


def load_seed(path: Path) -> dict[str, Any]:
    """A seed document from JSON or YAML (ruamel.yaml is already a bridge dependency)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        from ruamel.yaml import YAML

        data = YAML(typ="safe").load(text)
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: the seed must be a mapping with a 'tenants' list")
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m graph_emulator", description=__doc__)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: loopback only)"
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--seed", type=Path, help="YAML or JSON file creating the demo tenant(s)")
    parser.add_argument(
        "--demo", action="store_true", help="create the built-in Contoso demo tenant"
    )
    parser.add_argument("--public-url", help="base URL clients use, if not http://HOST:PORT")
    parser.add_argument(
        "--retry-delays",
        default="1,2,5,10,30,60",
        help="seconds between notification redeliveries (comma-separated; default %(default)s)",
    )
    parser.add_argument(
        "--https-only-webhooks",
        action="store_true",
        help="refuse http notification URLs as Graph does",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = EmulatorConfig(
        public_url=args.public_url or f"http://{args.host}:{args.port}",
        retry_delays=tuple(float(d) for d in args.retry_delays.split(",") if d.strip()),
        allow_http_notification_urls=not args.https_only_webhooks,
    )
    seed = load_seed(args.seed) if args.seed else (DEMO if args.demo else None)
    web.run_app(create_app(config, seed), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
