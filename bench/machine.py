"""A description of the machine and the software a run measured."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.synapse import synapse_python


@dataclass(frozen=True, slots=True)
class Machine:
    cpus: int
    cpu_model: str
    memory_gb: float
    os: str
    kernel: str
    python: str
    synapse: str
    postgres: str
    pontis: str
    """The git revision of the bridge code measured."""


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024 / 1e9
    return 0.0


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def _synapse_version() -> str:
    result = subprocess.run(
        [str(synapse_python()), "-c", "import synapse; print(synapse.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout.strip() or "unknown"


def describe(postgres: str, pontis: str) -> Machine:
    return Machine(
        cpus=len(os.sched_getaffinity(0)),
        cpu_model=_cpu_model(),
        memory_gb=_memory_gb(),
        os=_os_name(),
        kernel=platform.release(),
        python=platform.python_version(),
        synapse=_synapse_version(),
        postgres=postgres,
        pontis=pontis,
    )
