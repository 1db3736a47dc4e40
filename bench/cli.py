"""The benchmark run: starts everything, measures each part in turn, writes the report."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import random
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.burst import burst
from bench.chaos import chaos
from bench.chaos_tally import render as render_chaos
from bench.chaos_tally import section_of, splice
from bench.driver import closed_loop
from bench.encryption import encryption_comparison
from bench.harness import BenchHub, running_hub, stop_bridge
from bench.machine import describe
from bench.mail import LmtpClient
from bench.measure import measure_paths
from bench.paths import MessagePath
from bench.paths.baseline import matrix_to_matrix
from bench.paths.email import email_paths
from bench.paths.encryption import KEYS as ENCRYPTION_KEYS
from bench.paths.reference import reference_paths
from bench.paths.teams import teams_paths
from bench.paths.xmpp import xmpp_paths
from bench.pgwire import Tally
from bench.postgres import DEFAULT_ADMIN_URL, server_version, temporary_database
from bench.procfs import memory_mb
from bench.profiling import Recording, py_spy, summarise
from bench.report import Report, render
from bench.results import EncryptionResult, RoundTripResult, Skipped, StartupResult
from bench.roundtrips import round_trips
from bench.scale import startup
from bench.settings import FULL, QUICK, Settings
from bench.source import SOURCES
from bench.timing import TimedMatrixUser

log = logging.getLogger("bench")
CHAOS_MESSAGES = 1000
CHAOS_KILLS = 10
REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Measure the bridge against the homeserver alone."
    )
    parser.add_argument("--quick", action="store_true", help="small N: a 1-2 minute smoke run")
    parser.add_argument(
        "--messages",
        type=int,
        help="N per path and phase, also of the encryption comparison (overrides the presets)",
    )
    parser.add_argument(
        "--output", type=Path, default=REPO / "docs" / "benchmarks.md", help="report to write"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("PONTIS_TEST_POSTGRES", DEFAULT_ADMIN_URL),
        help="PostgreSQL to create a throw-away database on (default: %(default)s)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL parts")
    parser.add_argument("--no-scale", action="store_true", help="skip start-up at scale")
    parser.add_argument("--no-burst", action="store_true", help="skip the burst")
    parser.add_argument(
        "--no-encryption",
        action="store_true",
        help="skip the encryption comparison (bridges with encryption off and on, each with "
        "its own Synapse, after the rest)",
    )
    parser.add_argument(
        "--paths",
        type=lambda text: [part for part in text.split(",") if part],
        help="measure only the bridged paths whose key starts with one of these "
        "(comma-separated: reference, xmpp, email, email-in, teams-out, encryption, ...); the "
        "baseline always runs, and a key of the encryption comparison selects all six of its "
        "paths. For profiling one connector; the report then lacks the other rows",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after measuring, sample the bridge with py-spy under load and add a profile section",
    )
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="worktree",
        help="bridge code to measure: a copy of the working tree taken at start, or the "
        "committed HEAD (default: %(default)s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument(
        "--chaos",
        action="store_true",
        help="run only the chaos benchmark (every connector in both directions while the "
        "bridge is SIGKILLed at random moments; --messages per direction, default "
        f"{CHAOS_MESSAGES}) and replace its section of the report, keeping the rest",
    )
    parser.add_argument(
        "--kills",
        type=int,
        default=CHAOS_KILLS,
        help="SIGKILLs in a chaos run (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of a chaos run's kill schedule (default: a random one, printed)",
    )
    return parser.parse_args(argv)


async def _profile(hub: BenchHub, paths: list[MessagePath], settings: Settings) -> str:
    executable = py_spy()
    if executable is None:
        return "py-spy is not installed (`.venv/bin/pip install py-spy`); no profile taken."
    raw = hub.workdir / "bridge-profile.txt"
    recording = Recording(executable, hub.bridge_pid, raw)
    await asyncio.sleep(1)  # py-spy attaches
    try:
        for path in paths:
            tokens = [f"profile {path.key} {i}" for i in range(settings.messages)]
            await closed_loop(path.send, path.arrivals, tokens, window=settings.window)
    finally:
        recording.stop()
    return (
        f"py-spy sampled the bridge (250 Hz, `--gil`: the thread running Python) while each bridged path sent "
        f"{settings.messages} more messages with {settings.window} in flight, after the "
        f"measurements above (sampling pauses the process, so it is kept out of them). "
        f"Raw stacks (collapsed format) were in `{raw}`; run with `--keep` to keep them.\n\n"
        + summarise(raw)
    )


async def _postgres_parts(
    hub: BenchHub, user: TimedMatrixUser, settings: Settings, admin_url: str, scale: bool
) -> tuple[list[StartupResult], list[RoundTripResult], Tally]:
    async with temporary_database(admin_url) as url:
        startups = []
        if scale:
            startups = await startup(
                hub,
                "PostgreSQL",
                str(url),
                portals=settings.scale_portals,
                ghosts=settings.scale_ghosts,
                starts=settings.scale_starts,
            )
        trips, idle = await round_trips(hub, user, url, settings.roundtrip_messages)
    return startups, trips, idle


async def run(args: argparse.Namespace, workdir: Path) -> Report:
    settings = QUICK if args.quick else FULL
    if args.messages:
        settings = replace(settings, messages=args.messages, encryption_messages=args.messages)
    encrypt = not args.no_encryption and (
        not args.paths or any(key.startswith(tuple(args.paths)) for key in ENCRYPTION_KEYS)
    )
    began = time.perf_counter()
    skipped: list[Skipped] = []
    postgres = "not used (--no-postgres)"
    if not args.no_postgres:
        try:
            postgres = await server_version(args.postgres)
        except Exception as err:  # whatever keeps us from connecting: report it, go on
            postgres = f"unreachable at {args.postgres}"
            skipped.append(Skipped("PostgreSQL parts", f"cannot connect: {err}"))
            args.no_postgres = True
    async with running_hub(workdir, args.source) as hub:
        machine = describe(postgres, hub.revision)
        alice = await hub.user("alice")
        baseline = await matrix_to_matrix(hub, alice)
        inbound, outbound = await reference_paths(hub, alice)
        xmpp_in, xmpp_out = await xmpp_paths(hub, alice)
        teams_in, teams_out = await teams_paths(hub, alice)
        lmtp = LmtpClient(hub.lmtp_port)
        mail_in, mail_in_postfix, mail_out = await email_paths(hub, alice, lmtp)
        bridged_paths: list[MessagePath] = [inbound, outbound, xmpp_in, xmpp_out, mail_in]
        if mail_in_postfix is not None:
            bridged_paths.append(mail_in_postfix)
        else:
            skipped.append(Skipped("Mail in through Postfix", hub.mail_missing or "no Postfix"))
        bridged_paths += [mail_out, teams_in, teams_out]
        if args.paths:
            bridged_paths = [p for p in bridged_paths if p.key.startswith(tuple(args.paths))]
        log.info("measuring latency and throughput (N=%d per phase)", settings.messages)
        results = await measure_paths(
            [baseline, *bridged_paths],
            settings,
            bridge_pid=hub.bridge_pid,
            synapse_pid=hub.synapse_pid,
            prosody_pid=hub.prosody_pid,
        )
        base, bridged = results[0], results[1:]
        burst_result = None
        if not args.no_burst:
            log.info("burst: %d portals x %d", settings.burst_portals, settings.burst_messages)
            burst_result = await burst(hub, alice, settings.burst_portals, settings.burst_messages)
        peak_rss = memory_mb(hub.bridge_pid)[1]
        profile = (
            await _profile(hub, bridged_paths, settings) if args.profile and bridged_paths else None
        )
        await lmtp.close()
        await stop_bridge(hub.bridge)  # the following bridges take its port

        startups: list[StartupResult] = []
        trips: list[RoundTripResult] = []
        idle: Tally | None = None
        if not args.no_scale:
            sqlite_url = f"sqlite:{workdir / 'scale.db'}"
            startups += await startup(
                hub,
                "SQLite",
                sqlite_url,
                portals=settings.scale_portals,
                ghosts=settings.scale_ghosts,
                starts=settings.scale_starts,
            )
        if not args.no_postgres:
            pg_startups, trips, idle = await _postgres_parts(
                hub, alice, settings, args.postgres, not args.no_scale
            )
            startups += pg_startups
        elif not args.no_scale:
            skipped.append(Skipped("Scale on PostgreSQL and database round trips", postgres))
        site_dir = hub.site_dir

    encryption: EncryptionResult | None = None
    if encrypt:
        log.info("encryption off and on: two Synapses and bridges of its own")
        encryption = await encryption_comparison(
            workdir / "encryption", site_dir, settings, profile=args.profile
        )

    return Report(
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        command=_command(),
        seconds=time.perf_counter() - began,
        machine=machine,
        settings=settings,
        baseline=base,
        bridged=list(bridged),
        bridge_idle_cpu_ms_per_s=1000 * base.bridge_cpu / base.seconds,
        bridge_peak_rss_mb=peak_rss,
        burst=burst_result,
        startups=startups,
        round_trips=trips,
        idle_tally=idle,
        skipped=skipped,
        profile=profile,
        encryption=encryption,
    )


def _command() -> str:
    return os.environ.get("PONTIS_BENCH_COMMAND") or shlex.join(
        [".venv/bin/python", "-m", "bench", *sys.argv[1:]]
    )


def _run_chaos(args: argparse.Namespace, workdir: Path) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    log.info("chaos benchmark, seed %d (repeat with --seed %d)", seed, seed)
    result = asyncio.run(
        chaos(
            workdir,
            args.source,
            messages=args.messages or CHAOS_MESSAGES,
            kills=args.kills,
            seed=seed,
            command=_command(),
        )
    )
    section = render_chaos(result)
    existing = args.output.read_text() if args.output.exists() else "# Benchmarks\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(splice(existing, section))
    log.info("seed %d; wrote the chaos section of %s", seed, args.output)
    for d in result.directions:
        log.info(
            "  %-9s sent %d, refused %d, lost %d, vanished %d, duplicated %d, reordered %d "
            "(%d never refused)",
            d.key, d.sent, d.refused, len(d.lost), len(d.unconfirmed), len(d.duplicated),
            len(d.reordered),
            len(d.reordered_unrefused),
        )  # fmt: skip
    return 0 if result.quiescent and all(d.clean for d in result.directions) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    logging.getLogger("slixmpp").setLevel(logging.WARNING)  # the XMPP client's connection chatter
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's, the SMTP sink's
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # the Graph emulator's
    logging.getLogger("nio").setLevel(logging.WARNING)  # the encrypting client's, per event
    # The Graph emulator's notification retries, while a chaos run has the bridge down.
    logging.getLogger("graph_emulator.notifier").setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="pontis-bench-"))
    log.info("working directory %s", workdir)
    try:
        if args.chaos:
            return _run_chaos(args, workdir)
        report = asyncio.run(run(args, workdir))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = render(report)
    # The chaos section comes from its own run (--chaos): a full run keeps it.
    kept = section_of(args.output.read_text()) if args.output.exists() else None
    args.output.write_text(splice(text, kept) if kept else text)
    missed = [c for c in report.checks() if not c.met]
    log.info("wrote %s; %d targets missed", args.output, len(missed))
    for check in missed:
        log.info("  MISSED %s (%s): %s", check.target, check.subject, check.measured)
    return 0
