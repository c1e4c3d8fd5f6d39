"""Fixtures for the live tests: a veth pair whose far end sits in a network namespace.

Frames sent with tcpreplay into the namespace end arrive on the host end, where the sensor
captures them; nothing leaves the machine. Needs root and `ip netns`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

# Frames in the captures are up to 64 KiB (segmentation offload on the recording host).
VETH_MTU = 65535
TIMEOUT = 60


def _missing_requirement() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, AF_PACKET); CI runs as root"
    for tool in ("ip", "tcpreplay"):
        if shutil.which(tool) is None:
            return f"needs {tool} (scripts/setup --test installs it)"
    if subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=TIMEOUT).returncode != 0:
        return "ip netns is not available here"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _missing_requirement()
    here = Path(__file__).parent
    for item in items:
        if Path(item.fspath).parent == here and "root" in item.keywords and reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=TIMEOUT)


@dataclass
class Veth:
    host: str        # captured on
    namespace: str
    peer: str        # inside the namespace: tcpreplay sends here

    def replay(self, pcap: Path | str, *extra: str) -> None:
        run("ip", "netns", "exec", self.namespace, "tcpreplay", "-q", "--topspeed",
            "-i", self.peer, *extra, str(pcap))


def make_veth(tag: str) -> Veth:
    veth = Veth(f"dfsh{tag}", f"dfslive{tag}", f"dfsn{tag}")
    subprocess.run(["ip", "netns", "del", veth.namespace], capture_output=True, timeout=TIMEOUT)
    run("ip", "netns", "add", veth.namespace)
    try:
        run("ip", "link", "add", veth.host, "mtu", str(VETH_MTU), "type", "veth",
            "peer", "name", veth.peer, "netns", veth.namespace)
        run("ip", "-n", veth.namespace, "link", "set", veth.peer, "mtu", str(VETH_MTU), "up")
        run("ip", "link", "set", veth.host, "up")
    except subprocess.CalledProcessError:
        remove_veth(veth)
        raise
    return veth


def remove_veth(veth: Veth) -> None:
    # Deleting the namespace deletes its veth end, and with it the pair.
    subprocess.run(["ip", "netns", "del", veth.namespace], capture_output=True, timeout=TIMEOUT)


# Session-wide: the kernel deletes a namespace's links asynchronously, so a pair cannot be
# re-created under the same name right after the previous module removed it.
@pytest.fixture(scope="session")
def veth():
    pair = make_veth(f"{os.getpid() % 10000}a")
    yield pair
    remove_veth(pair)


@pytest.fixture(scope="session")
def second_veth():
    pair = make_veth(f"{os.getpid() % 10000}b")
    yield pair
    remove_veth(pair)
