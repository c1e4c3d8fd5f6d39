"""systemd/dfs-sensor.service and scripts/install-service: the unit grants CAP_NET_RAW and
nothing else; installed into a fresh Debian 12 root, systemd accepts it and its ExecStart runs.

The fresh root is made by debootstrap (minbase, plus python3, and systemd and procps, which a
Debian 12 system running systemd has): ~1.5 min and ~60 MB from deb.debian.org, then the
install fetches python3-venv from Debian and the package's dependencies from PyPI. The root
gets this host's resolver, environment and CA certificates, so it reaches the registries the
way this host does."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

UNIT = ROOT / "systemd" / "dfs-sensor.service"
INSTALLED_BINARY = "/opt/dfs-sensor/venv/bin/dfs-sensor"
INSTALLED_UNIT = "/etc/systemd/system/dfs-sensor.service"
INSTALLED_DOC = "/usr/share/doc/dfs-sensor/README.md"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"        # Debian 12
BUILD_TIMEOUT = 1200      # debootstrap, python3-venv from Debian, the dependencies from PyPI, twice
EDITED_SETTING = 'DFS_SENSOR_INTERFACES="-i eth9"\n'

# Inside a private mount namespace (the bind mounts vanish with it): a fresh Debian 12 root,
# two installs into it (the second must keep the edited settings), then what the tests
# check, each into $OUT.
SCRIPT = r"""
set -eu
debootstrap --variant=minbase --include=python3,systemd,procps "$SUITE" "$R" "$MIRROR" > "$OUT/debootstrap" 2>&1
cp /etc/resolv.conf "$R/etc/resolv.conf"
# Added to the root's bundle when ca-certificates is installed (python3-venv pulls it in).
mkdir -p "$R/usr/local/share/ca-certificates"
cp /etc/ssl/certs/ca-certificates.crt "$R/usr/local/share/ca-certificates/host.crt"
mount --bind /dev "$R/dev"
mount --bind /proc "$R/proc"
"$REPO/scripts/install-service" --root "$R" > "$OUT/install" 2>&1
printf '%s' "$EDITED" >> "$R/etc/default/dfs-sensor"
"$REPO/scripts/install-service" --root "$R" > "$OUT/reinstall" 2>&1
set +e
systemd-analyze --root="$R" verify "$R$UNIT" > "$OUT/verify" 2>&1; echo $? > "$OUT/verify.rc"
chroot "$R" systemd-analyze verify "$UNIT" > "$OUT/verify-inside" 2>&1; echo $? > "$OUT/verify-inside.rc"
chroot "$R" "$BINARY" --help > "$OUT/help" 2>&1; echo $? > "$OUT/help.rc"
chroot "$R" /opt/dfs-sensor/venv/bin/python -c 'import sensor; print(sensor.__file__)' > "$OUT/module" 2>&1
chroot "$R" /opt/dfs-sensor/venv/bin/python -m pip list --format=freeze > "$OUT/packages" 2>&1
"""


def service_section() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().split("[Service]")[1].split("[Install]")[0].splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """What the checks read after scripts/install-service ran twice into a fresh Debian 12 root."""
    for tool, package in (("systemd-analyze", "systemd"), ("debootstrap", "debootstrap"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup --test installs {package})")
    base = tmp_path_factory.mktemp("fresh-debian")
    (base / "out").mkdir()
    env = os.environ | {"R": str(base / "root"), "OUT": str(base / "out"), "REPO": str(ROOT), "SUITE": SUITE,
                        "MIRROR": DEBIAN_MIRROR, "UNIT": INSTALLED_UNIT, "BINARY": INSTALLED_BINARY,
                        "EDITED": EDITED_SETTING, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(base)}
    try:
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", SCRIPT],
                              env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        out = {p.name: p.read_text() for p in (base / "out").iterdir()}
        assert done.returncode == 0, done.stderr + "".join(f"\n== {k}\n{v[-3000:]}" for k, v in out.items())
        yield out | {"root": base / "root"}
    finally:
        shutil.rmtree(base / "root", ignore_errors=True)     # ~300 MB


@pytest.mark.root
@pytest.mark.slow
def test_installed_unit_passes_systemd_analyze_verify(installed):
    # From this host on the root's files, and by the root's own systemd.
    assert installed["verify.rc"].strip() == "0", installed["verify"]
    assert installed["verify"] == ""
    assert installed["verify-inside.rc"].strip() == "0", installed["verify-inside"]
    assert installed["verify-inside"] == ""


@pytest.mark.root
@pytest.mark.slow
def test_installed_execstart_binary_runs_help_from_its_own_virtualenv(installed):
    assert installed["help.rc"].strip() == "0", installed["help"]
    assert "Usage: dfs-sensor" in installed["help"] and "replay" in installed["help"]
    # The package itself is in the virtualenv, not a link back to this checkout.
    assert installed["module"].startswith("/opt/dfs-sensor/venv/lib/"), installed["module"]
    packages = {line.split("==")[0].lower() for line in installed["packages"].splitlines()}
    assert {"dfs-sensor", "click", "impacket", "pyshark"} <= packages
    assert not packages & {"scapy", "pytest", "hypothesis"}      # test-only dependencies stay out


@pytest.mark.root
@pytest.mark.slow
def test_install_writes_the_unit_its_settings_and_documentation_and_keeps_edited_settings(installed):
    root = installed["root"]
    assert (root / INSTALLED_UNIT.lstrip("/")).read_text() == UNIT.read_text()
    assert (root / INSTALLED_DOC.lstrip("/")).read_text() == (ROOT / "README.md").read_text()
    assert "installing python3-venv" in installed["install"]       # a fresh Debian 12 lacks it
    settings = (root / "etc/default/dfs-sensor").read_text()
    assert settings == (ROOT / "systemd" / "dfs-sensor.env").read_text() + EDITED_SETTING
    assert "keeping" in installed["reinstall"] and "not reloading systemd" in installed["reinstall"]
    assert f"Documentation=file://{INSTALLED_DOC}" in UNIT.read_text()


def test_unit_keeps_only_cap_net_raw_and_the_hardening():
    service = service_section()
    assert service["AmbientCapabilities"] == ["CAP_NET_RAW"]
    assert service["CapabilityBoundingSet"] == ["CAP_NET_RAW"]
    assert service["RestrictAddressFamilies"] == ["AF_PACKET AF_UNIX AF_NETLINK"]
    for key, value in [("DynamicUser", "yes"), ("StateDirectory", "dfs-sensor"), ("NoNewPrivileges", "yes"),
                       ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                       ("Restart", "on-failure"), ("RestartPreventExitStatus", "2")]:
        assert service[key] == [value]
    assert service["MemoryMax"][0].endswith(("M", "G"))
    assert service["ExecStart"][0].startswith(INSTALLED_BINARY + " live ")
