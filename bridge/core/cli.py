"""``pontis``: generate-registration, run (the default), check, dead-letters, pending and audit;
``pontis <network> …`` for a connector's own commands (:class:`SupportsCli`).

Every failure an operator can cause (missing file, bad YAML, invalid value, unreachable
homeserver) ends as one clear line per problem on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from bridge import __version__
from bridge.core.app import (
    KV_NETWORK,
    App,
    ConnectorFactory,
    build_connectors,
    discover_connectors,
)
from bridge.core.audit import AuditLog, cli_actor, retried
from bridge.core.config import Config, ConfigError, make_registration, write_registration
from bridge.core.connector import SupportsCheck, SupportsCli
from bridge.core.encryption_settings import PICKLE_KEY_ENV
from bridge.core.ids import NetworkID
from bridge.core.logs import setup_logging
from bridge.core.pickle_key import PickleKeyError, SecretError, load_pickle_key, write_key_file
from bridge.core.registration_check import check_registration
from bridge.core.secret_files import log_exposed_files, print_exposed_files
from bridge.crypto.check import check_encryption
from bridge.portal.audit import AuditStore, Outcome
from bridge.portal.dead_letters import details, retry_summary
from bridge.portal.dead_letters import line as letter_line
from bridge.portal.pending import PendingRows, parse_ref
from bridge.portal.store import Store


def _parser(networks: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pontis", description="Pontis Matrix bridge hub")
    parser.add_argument(
        "-c", "--config", default="config.yaml", help="config file (default: %(default)s)"
    )
    parser.add_argument("--version", action="version", version=f"pontis {__version__}")
    sub = parser.add_subparsers(dest="command")
    reg = sub.add_parser(
        "generate-registration", help="fill tokens into the config and write the registration"
    )
    reg.add_argument("-r", "--registration", default="registration.yaml", help="output file")
    sub.add_parser("run", help="run the bridge (default)")
    check = sub.add_parser(
        "check", help="validate config, registration, database, homeserver and connectors"
    )
    check.add_argument(
        "-r", "--registration", default="registration.yaml",
        help="the registration file the homeserver loads (default: %(default)s)",
    )  # fmt: skip
    key = sub.add_parser(
        "generate-pickle-key", help="write a new encryption pickle key to a file (mode 0600)"
    )
    key.add_argument("-o", "--output", required=True, help="file to create (never overwritten)")
    sub.add_parser(
        "show-recovery-key", help="print the recovery key of the bridge's cross-signing identity"
    )
    dead = sub.add_parser(
        "dead-letters",
        help="list, show, retry or drop what could not be bridged (works while the bridge runs)",
    )
    dead.add_argument("action", choices=("list", "show", "retry", "drop"))
    dead.add_argument("target", nargs="?", help="a dead letter's id, or 'all' (retry, drop)")
    dead.add_argument("--limit", type=int, default=100, help="list: how many, newest (100)")
    pending = sub.add_parser(
        "pending",
        help="list what waits to be bridged, or set a row that waits for ever aside as a dead "
        "letter (works while the bridge runs)",
    )
    pending.add_argument("action", choices=("list", "park"))
    pending.add_argument("target", nargs="?", help="park: a row as listed (m<id> or n<id>)")
    pending.add_argument("--limit", type=int, default=100, help="list: how many, oldest (100)")
    audit = sub.add_parser(
        "audit",
        help="admin actions and policy refusals, newest first (works while the bridge runs)",
    )
    audit.add_argument("--limit", type=int, default=100, help="how many, newest (100)")
    audit.add_argument("--actor", help="only this actor (a Matrix id, xmpp:domain, cli:user)")
    audit.add_argument("--action", help="only this action, or those under it (dead-letters)")
    audit.add_argument("--since", help="only from this ISO date or time on (UTC if no offset)")
    for network in networks:
        own = sub.add_parser(network, help=f"the {network} connector's own commands, if any")
        own.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _cannot_open(config: Config, err: Exception) -> str:
    """The database problem, naming the database without the URL's credentials."""
    return f"database: cannot open {config.database_url.split('@')[-1]}: {err}"


def _fail(lines: Sequence[object]) -> int:
    for line in lines:
        print(f"pontis: {line}", file=sys.stderr)
    return 1


def main(
    argv: Sequence[str] | None = None, *, factories: Mapping[str, ConnectorFactory] | None = None
) -> int:
    factories = discover_connectors() if factories is None else factories
    args = _parser(sorted(factories)).parse_args(argv)
    command = args.command or "run"
    try:
        if command == "generate-pickle-key":
            return _generate_pickle_key(Path(args.output))
        if command == "generate-registration":
            return _generate_registration(Path(args.config), Path(args.registration), factories)
        config = Config.load(args.config)
        if command == "check":
            return asyncio.run(_check(config, factories, Path(args.registration)))
        if command == "show-recovery-key":
            return asyncio.run(_show_recovery_key(config))
        if command == "pending":
            return asyncio.run(_pending(config, args.action, args.target, args.limit))
        if command == "dead-letters":
            return asyncio.run(_dead_letters(config, args.action, args.target, args.limit))
        if command == "audit":
            return asyncio.run(_audit_list(config, args.limit, args.actor, args.action, args.since))
        if command in factories:
            return asyncio.run(_connector_cli(config, command, factories[command], args.args))
        return _run(config, factories)
    except ConfigError as err:
        return _fail(err.problems)
    except KeyboardInterrupt:
        return 130


def _generate_registration(
    config_path: Path, reg_path: Path, factories: Mapping[str, ConnectorFactory]
) -> int:
    config = Config.load(config_path, require_tokens=False)
    if config.generate_tokens():
        config.save()
    if config.encryption.allow and not os.environ.get(PICKLE_KEY_ENV):
        key_file = Path(config.encryption.pickle_key_file or "pickle.key")
        if not key_file.is_absolute():
            key_file = config.pickle_key_base_dir / key_file
        if not key_file.exists():
            write_key_file(key_file)
            print(f"Wrote a new encryption pickle key to {key_file}; back it up.")
    registration = make_registration(
        config, sorted(set(factories) | set(config.enabled_connectors()))
    )
    write_registration(reg_path, registration)
    print(
        f"Wrote {reg_path}. Add it to app_service_config_files in the homeserver config and restart it."
    )
    if _database_exists(config.database_url):
        asyncio.run(_audit_generated(config.database_url, reg_path))
    return 0


def _database_exists(url: str) -> bool:
    """False for a SQLite file not created yet: generate-registration usually comes first, and
    it does not create the database just to record itself."""
    if url.split(":", 1)[0] not in ("sqlite", "sqlite3"):
        return True
    path = url.split(":", 1)[1].removeprefix("//")
    return path != ":memory:" and Path(path).is_file()


async def _audit_generated(url: str, reg_path: Path) -> None:
    """Records generate-registration in the store; a failure is one warning line."""
    try:
        store = await asyncio.wait_for(Store.open(url), AUDIT_OPEN_SECONDS)
    except Exception as err:
        print(f"pontis: warning: not in the audit log, the database cannot be opened: {err}",
              file=sys.stderr)  # fmt: skip
        return
    try:
        await _audit(store, "generate-registration", str(reg_path), "ok")
    finally:
        await store.close()


def _generate_pickle_key(path: Path) -> int:
    try:
        write_key_file(path)
    except FileExistsError:
        return _fail([f"{path} exists; the bridge's keys may depend on it, so it is kept"])
    except OSError as err:
        return _fail([f"cannot write {path}: {err}"])
    print(f"Wrote {path} (mode 0600). Set encryption.pickle_key_file to it and back it up.")
    return 0


async def _show_recovery_key(config: Config) -> int:
    try:
        pickle_key = load_pickle_key(
            config.encryption.pickle_key_file, os.environ, base_dir=config.pickle_key_base_dir
        )
    except PickleKeyError as err:
        return _fail([err])
    store = await Store.open(config.database_url)
    try:
        sealed = await store.kv_get(NetworkID(KV_NETWORK), "recovery_key")
    finally:
        await store.close()
    if sealed is None:
        return _fail(["no recovery key yet: the bridge makes one when it first cross-signs itself"])
    try:
        print(pickle_key.secret_box().open(sealed, context="recovery_key"))
    except SecretError as err:
        return _fail([err])
    return 0


class _Usage(Exception):
    pass


async def _connector_cli(
    config: Config, network: str, factory: ConnectorFactory, args: list[str]
) -> int:
    """``pontis <network> …``: the connector's own command, audited like the core's."""
    connector = factory()
    if not isinstance(connector, SupportsCli):
        return _fail([f"the {network} connector has no commands of its own"])
    try:
        store = await Store.open(config.database_url)
    except Exception as err:
        return _fail([_cannot_open(config, err)])
    try:
        status = await connector.run_cli(
            list(args), config.connector_section(network), store.database
        )
        await _audit(store, f"{network} {args[0] if args else ''}".strip(), " ".join(args[1:]),
                     "ok" if status == 0 else "failed")  # fmt: skip
        return status
    finally:
        await store.close()


AUDIT_OPEN_SECONDS = 10.0


async def _audit(
    store: Store, action: str, target: str, outcome: Outcome, detail: str = ""
) -> None:
    """One audit entry for what this command line did (a store failure: a warning line)."""
    await AuditLog(store).record(
        actor=cli_actor(), action=action, target=target, outcome=outcome, origin="cli",
        detail=detail,
    )  # fmt: skip


def _letter_target(action: str, target: str | None) -> int | None:
    """The id ``target`` names, None for ``all``; raises _Usage."""
    if target is not None and target.isascii() and target.isdigit() and len(target) < 18:
        return int(target)
    if target == "all" and action in ("retry", "drop"):
        return None
    raise _Usage(
        f"usage: pontis -c CONFIG dead-letters {action} <id>{'' if action == 'show' else '|all'}"
    )


async def _dead_letters(config: Config, action: str, target: str | None, limit: int) -> int:
    try:
        letter_id = None if action == "list" else _letter_target(action, target)
    except _Usage as usage:
        return _fail([usage])
    try:
        store = await Store.open(config.database_url)
    except Exception as err:
        return _fail([_cannot_open(config, err)])
    letters = store.dead_letters
    try:
        if action == "list":
            found = await letters.newest(limit)
            total = await letters.count()
            for letter in found:
                print(letter_line(letter))
            more = f" ({total - len(found)} older not shown)" if total > len(found) else ""
            print(f"{total} dead letter{'s' if total != 1 else ''}{more}")
            return 0
        if action == "show":
            assert letter_id is not None
            shown = await letters.get(letter_id)
            if shown is None:
                return _fail([f"there is no dead letter {letter_id}"])
            print(details(shown))
            return 0
        target = "all" if letter_id is None else str(letter_id)
        if action == "drop":
            if letter_id is None:
                dropped = await letters.drop_all()
                await _audit(store, "dead-letters.drop", target, "ok", f"{dropped} dropped")
                print(f"Dropped {dropped} dead letters.")
            elif await letters.drop(letter_id):
                await _audit(store, "dead-letters.drop", target, "ok")
                print(f"Dropped dead letter {letter_id}.")
            else:
                await _audit(store, "dead-letters.drop", target, "failed", "no such dead letter")
                return _fail([f"there is no dead letter {letter_id}"])
            return 0
        results = (
            await letters.retry_all() if letter_id is None else [await letters.retry(letter_id)]
        )
        await _audit(store, "dead-letters.retry", target, *retried(letter_id, results))
    finally:
        await store.close()
    print(retry_summary(results))
    if any(r.outcome == "retried" for r in results):
        print("A running bridge picks them up within seconds; a stopped one when it starts.")
    failed = [r for r in results if r.outcome in ("missing", "unreadable")]
    return 1 if letter_id is not None and failed else 0


async def _pending(config: Config, action: str, target: str | None, limit: int) -> int:
    if action == "park":
        if target is None:
            return _fail(["usage: pontis -c CONFIG pending park <m<id>|n<id>>"])
        try:
            parse_ref(target)
        except ValueError as err:
            return _fail([err])
    try:
        store = await Store.open(config.database_url)
    except Exception as err:
        return _fail([_cannot_open(config, err)])
    rows = PendingRows(store)
    try:
        if action == "list":
            found, total = await rows.oldest(limit), await rows.count()
            now = int(time.time() * 1000)
            for row in found:
                print(row.line(now))
            more = f" ({total - len(found)} newer not shown)" if total > len(found) else ""
            print(f"{total} pending{more}")
            return 0
        assert target is not None
        letter_id = await rows.park(target)
        await _audit(store, "pending.park", target, "failed" if letter_id is None else "ok",
                     "not pending" if letter_id is None else f"dead letter {letter_id}")  # fmt: skip
    finally:
        await store.close()
    if letter_id is None:
        return _fail([f"{target} is not pending (delivered meanwhile, or never existed)"])
    print(f"Set {target} aside as dead letter {letter_id}; its portal goes on with the next. "
          f"`pontis -c CONFIG dead-letters retry {letter_id}` puts it back.")  # fmt: skip
    return 0


def _since(text: str) -> int:
    """Milliseconds since the epoch of an ISO date or time (UTC without an offset)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise _Usage(
            f"--since: {text!r} is not an ISO date or time, e.g. 2026-12-01 or "
            "2026-12-01T08:30:00+01:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


async def _audit_list(
    config: Config, limit: int, actor: str | None, action: str | None, since: str | None
) -> int:
    try:
        if limit < 1:
            raise _Usage("--limit: give at least 1")
        since_ms = None if since is None else _since(since)
    except _Usage as usage:
        return _fail([usage])
    try:
        store = await Store.open(config.database_url)
    except Exception as err:
        return _fail([_cannot_open(config, err)])
    entries = AuditStore(store.database)
    try:
        found = await entries.newest(limit, actor=actor, action=action, since_ms=since_ms)
        total = await entries.count(actor=actor, action=action, since_ms=since_ms)
    finally:
        await store.close()
    for entry in found:
        # Printable whatever it holds (a lone surrogate would stop print()).
        print(entry.line().encode("utf-8", "backslashreplace").decode("utf-8"))
    more = f" ({total - len(found)} older not shown)" if total > len(found) else ""
    print(f"{total} audit entr{'ies' if total != 1 else 'y'}{more}")
    return 0


def _run(config: Config, factories: Mapping[str, ConnectorFactory]) -> int:
    setup_logging(config.log_level, config.log_format, config.secrets())
    log_exposed_files(config, logging.getLogger("pontis"))
    app = App(config, factories=factories)
    return asyncio.run(_serve(app))


async def _serve(app: App) -> int:
    log = logging.getLogger("pontis")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Start-up waits for the homeserver as long as it takes; a signal must still end it.
    starting = asyncio.create_task(app.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        log.info("Stopped before start-up finished")
        await app.stop()
        return 0
    if (err := starting.exception()) is not None:
        log.critical("Startup failed: %s", err, exc_info=log.isEnabledFor(logging.DEBUG))
        stopping.cancel()
        await app.stop()
        return 1
    await stopping
    log.info("Stopping")
    await app.stop()
    return 0


async def _check(
    config: Config, factories: Mapping[str, ConnectorFactory], registration: Path
) -> int:
    print_exposed_files(config, [registration])
    problems: list[str] = []
    try:
        connectors = build_connectors(config, factories)
    except ConfigError as err:
        problems += [str(p) for p in err.problems]
        connectors = {}
    for network, connector in connectors.items():
        if isinstance(connector, SupportsCheck):
            problems += await connector.check(config.connector_section(network))
    try:
        store = await Store.open(config.database_url)
        await store.close()
    except Exception as err:
        problems.append(_cannot_open(config, err))
    problems += check_registration(config, registration)
    problems += await _check_homeserver(config)
    if not problems:  # the encryption probe needs a homeserver that knows the appservice
        problems += await check_encryption(config)
    if problems:
        return _fail(problems)
    print("Configuration, database, homeserver and enabled networks are OK.")
    return 0


async def _check_homeserver(config: Config) -> list[str]:
    base = config.homeserver_address.rstrip("/")
    headers = {"Authorization": f"Bearer {config.as_token}"}
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            async with http.get(f"{base}/_matrix/client/versions") as resp:
                if resp.status != 200:
                    return [f"homeserver.address: {base} answered HTTP {resp.status} to /versions"]
            whoami = f"{base}/_matrix/client/v3/account/whoami"
            async with http.get(
                whoami, headers=headers, params={"user_id": config.bot_mxid}
            ) as resp:
                if resp.status in (401, 403):
                    return [
                        "appservice.as_token: the homeserver does not know this token; "
                        "is the registration in app_service_config_files?"
                    ]
        except (aiohttp.ClientError, TimeoutError) as err:
            return [f"homeserver.address: cannot reach {base}: {err or type(err).__name__}"]
    return []


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
