"""``python -m graph_emulator --host 127.0.0.1 --port 8765 [--seed FILE]``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import ssl
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
        "--https-port",
        type=int,
        help="also serve on this port over https (MSAL signs in over https only); needs"
        " --tls-cert and --tls-key, e.g. from a test CA the bridge trusts by ca_file",
    )
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate for --https-port")
    parser.add_argument("--tls-key", type=Path, help="PEM private key for --https-port")
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
    app = create_app(config, seed)
    if args.https_port is None:
        web.run_app(app, host=args.host, port=args.port)
        return
    if args.tls_cert is None or args.tls_key is None:
        raise SystemExit("--https-port needs --tls-cert and --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    asyncio.run(_serve(app, args.host, args.port, args.https_port, context))


async def _serve(
    app: web.Application, host: str, port: int, https_port: int, context: ssl.SSLContext
) -> None:
    """The same app on an http and an https port, until interrupted."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    await web.TCPSite(runner, host, https_port, ssl_context=context).start()
    logging.getLogger(__name__).info(
        "Serving on http://%s:%d and https://%s:%d", host, port, host, https_port
    )
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    main()
