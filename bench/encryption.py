"""Encryption on and off: bridge CPU per message in three portals, measured in the same run,
interleaved round by round.

The main bridge of a run has encryption off (:data:`bench.config.ENCRYPTION_OFF`) and is gone by
the time this part runs, so it starts two hubs of its own, each a Synapse, the reference network,
a bridge (the run's frozen copy of the code, the reference connector only) and a matrix-nio user:

- **encryption off**: ``encryption: {allow: false}``, a registration without the encryption
  extensions, one portal. What every bridge ran before encryption existed.
- **encryption on**: ``encryption: {allow: true}``; ``generate-registration`` adds what
  encryption needs to the registration (MSC2409/MSC3202 transaction extensions, MSC4190
  devices) and writes a ``pickle.key`` beside the config. Two portals of the one bridge process:
  the unencrypted one is opened while the bridge runs with ``default: false``, then the bridge
  is restarted with ``default: true`` (same database, same crypto device) and opens the
  encrypted one. From then on they differ only in their ``m.room.encryption`` state.

Neither Synapse encrypts rooms by default: the bridge decides. The six paths
(:mod:`bench.paths.encryption`) are measured as the main paths are (:func:`measure_paths`:
warm-up, then N per path and phase in rounds that interleave them), each on its own bridge's and
Synapse's CPU. The target (:data:`bench.targets.MAX_ENCRYPTION_ADDED_CPU_MS`) is on the encrypted
portal against encryption off: what turning encryption on costs a message.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nio
from ruamel.yaml import YAML

from bench.config import DOMAIN, ENCRYPTION_OFF, encryption_on, write_encryption_config
from bench.driver import closed_loop
from bench.harness import stop_bridge
from bench.measure import measure_paths
from bench.paths import MessagePath
from bench.paths.encryption import (
    OFF,
    ON,
    PLAIN,
    EncryptableToRemote,
    Portal,
    RemoteToEncryptable,
    TimedEncryptedUser,
    Variant,
)
from bench.procfs import CpuMeter, memory_mb
from bench.profiling import Recording, breakdown, compare, py_spy
from bench.results import EncryptionResult
from bench.settings import Settings
from bench.timing import TimedRemoteNetwork
from tests.e2e.hub import BridgeProcess
from tests.e2e.process import free_port
from tests.e2e.synapse import SynapseServer

log = logging.getLogger("bench")

IDLE_SECONDS = 5.0
PROFILE_MESSAGES = 1000
"""Messages per path while py-spy samples (``--profile``): several hundred samples a path."""
ENCRYPT_FRAME = "CryptoEngine.encrypt (bridge/crypto/engine.py)"
DECRYPT_FRAME = "CryptoEngine.decrypt (bridge/crypto/engine.py)"


@dataclass
class _Hub:
    """One Synapse, the reference network, one bridge and one nio user."""

    name: str
    synapse: SynapseServer
    remote: TimedRemoteNetwork
    bridge: BridgeProcess
    as_port: int
    users: list[TimedEncryptedUser] = field(default_factory=list)

    @property
    def bridge_pid(self) -> int:
        assert self.bridge.proc is not None, "the bridge is not running"
        return self.bridge.proc.pid

    @property
    def synapse_pid(self) -> int:
        process = self.synapse._process  # SynapseServer keeps its Popen private
        assert process is not None, "Synapse is not running"
        return process.pid

    @property
    def user(self) -> TimedEncryptedUser:
        return self.users[0]

    async def restart_bridge(self) -> None:
        await stop_bridge(self.bridge)
        await self.bridge.start(self.as_port)
        await self.remote.wait_connected()

    async def close(self) -> None:
        for user in self.users:
            await user.close()
        await stop_bridge(self.bridge)
        await self.synapse.stop()
        await self.remote.stop()


def _prepare(
    workdir: Path, site_dir: Path, remote_url: str, encryption: dict[str, Any]
) -> tuple[BridgeProcess, int, Path]:
    """The bridge (not started), its appservice port and its registration: directory, config
    and, with encryption allowed, the pickle key written."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.yaml"
    as_port = free_port()
    write_encryption_config(
        config_path, as_port=as_port, metrics_port=free_port(), remote_url=remote_url,
        encryption=encryption,
    )  # fmt: skip
    bridge = BridgeProcess(workdir, config_path, site_dir, env={})
    registration = workdir / "registration.yaml"
    result = bridge.cli("generate-registration", "-r", str(registration))
    if result.returncode != 0:
        raise RuntimeError(f"generate-registration failed:\n{result.stderr}")
    if encryption.get("allow") and not (workdir / "pickle.key").exists():
        raise RuntimeError(f"generate-registration wrote no pickle key:\n{result.stdout}")
    return bridge, as_port, registration


async def _start_hub(name: str, workdir: Path, site_dir: Path, encryption: dict[str, Any]) -> _Hub:
    remote = TimedRemoteNetwork()
    await remote.start()
    try:
        bridge, as_port, registration = _prepare(workdir, site_dir, remote.url, encryption)
    except Exception:
        await remote.stop()
        raise
    hub = _Hub(name, SynapseServer(DOMAIN, workdir / "synapse", [registration]), remote, bridge,
               as_port)  # fmt: skip
    try:
        await hub.synapse.start()
        bridge.env["PONTIS_HOMESERVER_ADDRESS"] = hub.synapse.base_url
        await bridge.start(as_port)
        await remote.wait_connected()
        mxid, token = await hub.synapse.register_user("nio-alice", displayname="Alice (nio)")
        user = TimedEncryptedUser(mxid, token, hub.synapse.base_url)
        hub.users.append(user)
        await user.start()
    except Exception:
        log.error("encryption: starting hub %r failed; its bridge's log:\n%s", name, bridge.tail())
        await hub.close()
        raise
    return hub


def _encrypt_new_portals(config_path: Path) -> None:
    """``encryption.default: true`` in the config, keeping the tokens that
    ``generate-registration`` filled in."""
    yaml = YAML()
    config = yaml.load(config_path)
    config["encryption"]["default"] = True
    yaml.dump(config, config_path)


async def _open_portal(hub: _Hub, variant: Variant, wait_seconds: float = 60) -> Portal:
    """A remote message opens a new chat; the hub's user joins its portal and sends one
    message back through nio's full path (members loaded, device keys queried, Megolm session
    shared). Checks that the portal is encrypted exactly when ``variant`` says."""
    remote, user = hub.remote, hub.user
    chat = f"{variant.tag}-chat"
    sender = f"{chat}-sender"
    remote.users[sender] = {"name": f"Sender of {chat}"}
    remote.chats[chat] = {"name": f"Bench {chat}", "matrix_users": [user.mxid]}
    opening = f"open {chat}"
    await remote.push(
        {"kind": "message", "chat": chat, "sender": sender, "id": "open", "text": opening}
    )
    room_id = await user.wait_for_invite(timeout=wait_seconds)
    await user.join(room_id, timeout=wait_seconds)
    if variant.encrypted:
        await user._wait_for_room(room_id, wait_seconds, encrypted=True)
    opened = await user.wait_for_message(room_id, opening, timeout=wait_seconds)
    room = user.client.rooms[room_id]
    if room.encrypted != variant.encrypted or user.was_encrypted(opened) != variant.encrypted:
        raise RuntimeError(
            f"portal {room_id} of {chat}: room encrypted={room.encrypted}, first message "
            f"encrypted={user.was_encrypted(opened)}; expected {variant.encrypted} for both"
        )
    reply = f"reply in {chat}"
    arrival = remote.arrivals.expect(reply)
    await user.send_text(room_id, reply)
    await asyncio.wait_for(arrival, wait_seconds)
    log.info("encryption: portal %s (%s) open", room_id, variant.room)
    return Portal(chat, room_id, sender, variant)


async def _refresh_members(hub: _Hub) -> None:
    """The user changes their display name, so that a member event reaches the restarted bridge
    in each of their rooms.

    The bridge keeps room members in memory (``MatrixAPI.state_store``) and learns them from
    transactions; after the restart it knew nobody in the portal opened before it, and looked up
    the sender's profile on the homeserver for every Matrix → network message there (0.3 ms of
    bridge CPU a message). That is what any bridge restart does to existing portals, not what
    encryption costs, so the comparison starts with both portals known."""
    user = hub.user
    mark = user.mark()
    response = await user.client.set_displayname("Alice (nio, renamed)")
    if isinstance(response, nio.ErrorResponse):
        raise RuntimeError(f"setting the display name failed: {response}")
    for room_id in user.client.rooms:
        await user.wait_for_message(
            room_id,
            lambda e: isinstance(e, nio.RoomMemberEvent) and e.state_key == user.mxid,
            timeout=30,
            after=mark,
        )
    await asyncio.sleep(1)  # Synapse pushes them to the bridge as it hands them to /sync


def _paths(hub: _Hub, portal: Portal) -> tuple[RemoteToEncryptable, EncryptableToRemote]:
    bridge, synapse = hub.bridge_pid, hub.synapse_pid
    return (
        RemoteToEncryptable(hub.remote, portal, hub.user.arrivals, bridge, synapse),
        EncryptableToRemote(hub.user, portal, hub.remote.arrivals, bridge, synapse),
    )


def _check_encrypted(inbound: list[RemoteToEncryptable], hubs: list[_Hub]) -> None:
    """Every token of the encrypted portal reached nio as ``m.room.encrypted``, none of the
    others did: the comparison measured what it says."""
    users = {id(path): hub.user for path, hub in zip(inbound, hubs, strict=True)}
    for path in inbound:
        user = users[id(path)]
        expect = path.portal.variant.encrypted
        tokens = [t for t in user.arrivals.seen if t.startswith(f"bench {path.key} ")]
        wrong = [t for t in tokens if (t in user.arrived_encrypted) != expect]
        if not tokens or wrong:
            raise RuntimeError(
                f"{path.key}: {len(wrong)} of {len(tokens)} messages arrived "
                f"{'unencrypted' if expect else 'encrypted'}"
            )


async def _record(path: MessagePath, pid: int, window: int, raw: Path, executable: str) -> None:
    recording = Recording(executable, pid, raw)
    await asyncio.sleep(1)  # py-spy attaches
    try:
        tokens = [f"profile {path.key} {i}" for i in range(PROFILE_MESSAGES)]
        await closed_loop(path.send, path.arrivals, tokens, window=window)
    finally:
        recording.stop()


_Path = RemoteToEncryptable | EncryptableToRemote


async def _profile(
    directions: list[tuple[_Path, _Path, _Path]],
    window: int,
    workdir: Path,
    executable: str,
) -> str:
    """py-spy on each path's bridge while it sends :data:`PROFILE_MESSAGES` more, one recording
    per path; per direction, what grew from the unencrypted portal to the encrypted one of the
    same bridge, what the crypto engine's call spends its time on, and what grew from
    encryption off to the unencrypted portal of the bridge with encryption on."""
    parts = []
    for (off, plain, encrypted), frame in zip(
        directions, (ENCRYPT_FRAME, DECRYPT_FRAME), strict=True
    ):
        raws = {}
        for path in (off, plain, encrypted):
            raws[path.key] = workdir / f"bridge-profile-{path.key}.txt"
            await _record(path, path.bridge_pid, window, raws[path.key], executable)
        heading = encrypted.label.split(",")[0]
        parts.append(
            f"#### {heading}: unencrypted → encrypted portal (same bridge)\n\n"
            + compare(raws[plain.key], raws[encrypted.key], messages=PROFILE_MESSAGES,
                      labels=("Unencrypted portal", "Encrypted portal"))
            + f"\n\nBelow `{frame}`, in the encrypted portal:\n\n"
            + breakdown(raws[encrypted.key], frame, messages=PROFILE_MESSAGES)
            + f"\n\n#### {heading}: encryption off → unencrypted portal of the bridge with "
            "encryption on\n\n"
            + compare(raws[off.key], raws[plain.key], messages=PROFILE_MESSAGES, top=8,
                      labels=("Encryption off", "Unencrypted portal"))
        )  # fmt: skip
    return (
        f"py-spy sampled each path's bridge (250 Hz, `--gil`: the thread holding the GIL) while "
        f"the path sent {PROFILE_MESSAGES} more messages with {window} in flight, after the "
        f"measurement (sampling pauses the process, so it is kept out of it), one recording per "
        f"path. *ms / message* is samples / 250 Hz / messages: the Python time a function and "
        f"its callees stand for per message, roughly; CPU outside the GIL (SQLite's own C code, "
        f"the kernel) is not in it. Work on aiosqlite's thread (`Connection._execute`) is not "
        f"below its async caller in these stacks; the comparisons show it as a row of its own. "
        f"Event-loop frames are left out. Raw stacks (collapsed format) were in `{workdir}`; "
        f"run with `--keep` to keep them.\n\n" + "\n\n".join(parts)
    )


async def encryption_comparison(
    workdir: Path, site_dir: Path, settings: Settings, *, profile: bool = False
) -> EncryptionResult:
    """Start both hubs in ``workdir``, open the three portals, measure the six paths with
    N = ``settings.encryption_messages``, stop everything."""
    hubs: list[_Hub] = []
    try:
        on = await _start_hub(
            "on", workdir / "on", site_dir, encryption_on(encrypt_new_portals=False)
        )
        hubs.append(on)
        plain = await _open_portal(on, PLAIN)
        await asyncio.to_thread(_encrypt_new_portals, on.bridge.config_path)
        await on.restart_bridge()
        encrypted = await _open_portal(on, ON)
        await _refresh_members(on)
        off = await _start_hub("off", workdir / "off", site_dir, ENCRYPTION_OFF)
        hubs.append(off)
        disabled = await _open_portal(off, OFF)

        (off_in, off_out), (plain_in, plain_out), (on_in, on_out) = (
            _paths(off, disabled), _paths(on, plain), _paths(on, encrypted)
        )  # fmt: skip
        idle = [CpuMeter(hub.bridge_pid) for hub in (off, on)]
        with idle[0].measure(), idle[1].measure():
            await asyncio.sleep(IDLE_SECONDS)
        n = replace(settings, messages=settings.encryption_messages)
        log.info("encryption: measuring off and on (N=%d per path and phase)", n.messages)
        results = await measure_paths(
            [off_in, plain_in, on_in, off_out, plain_out, on_out],
            n,
            bridge_pid=on.bridge_pid,
            synapse_pid=on.synapse_pid,
        )
        _check_encrypted([off_in, plain_in, on_in], [off, on, on])
        rss = (memory_mb(off.bridge_pid)[1], memory_mb(on.bridge_pid)[1])
        profiled = None
        if profile:
            directions: list[tuple[_Path, _Path, _Path]] = [
                (off_in, plain_in, on_in),
                (off_out, plain_out, on_out),
            ]
            executable = py_spy()
            if executable is None:
                profiled = "py-spy is not installed (`.venv/bin/pip install py-spy`)."
            else:
                profiled = await _profile(directions, n.window, workdir, executable)
        r_off_in, r_plain_in, r_on_in, r_off_out, r_plain_out, r_on_out = results
        return EncryptionResult(
            off_in=r_off_in,
            plain_in=r_plain_in,
            encrypted_in=r_on_in,
            off_out=r_off_out,
            plain_out=r_plain_out,
            encrypted_out=r_on_out,
            bridge_idle_cpu_ms_per_s=(
                1000 * idle[0].seconds / IDLE_SECONDS,
                1000 * idle[1].seconds / IDLE_SECONDS,
            ),
            bridge_peak_rss_mb=rss,
            profile=profiled,
        )
    except Exception:
        for hub in hubs:
            log.error("encryption comparison failed; bridge %r's log:\n%s", hub.name,
                      hub.bridge.tail())  # fmt: skip
        raise
    finally:
        for hub in hubs:
            await hub.close()
