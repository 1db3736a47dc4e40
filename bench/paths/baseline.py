"""Baseline: one Matrix user sends to another on the same Synapse; no bridge involved."""

from __future__ import annotations

from dataclasses import dataclass

from bench.harness import BenchHub
from bench.timing import Arrivals, TimedMatrixUser


@dataclass
class MatrixToMatrix:
    sender: TimedMatrixUser
    room_id: str
    arrivals: Arrivals
    key: str = "baseline"
    label: str = "Matrix user → Matrix user (Synapse alone)"

    async def send(self, token: str) -> None:
        await self.sender.send_text(self.room_id, token)


async def matrix_to_matrix(hub: BenchHub, recipient: TimedMatrixUser) -> MatrixToMatrix:
    """``recipient`` syncs; the sender is a fresh user that does not."""
    sender = await hub.user("baseline-sender", sync=False)
    room_id = await sender.create_room(invite=[recipient.mxid], name="Baseline")
    await recipient.wait_for_invite(timeout=30, inviter=sender.mxid)
    await recipient.join(room_id)
    return MatrixToMatrix(sender, room_id, recipient.arrivals)
