"""systemd/dfs-sensor.service and scripts/install-service: the unit grants CAP_NET_RAW and
nothing else; installed into a scratch root, systemd accepts it and its ExecStart runs.

The scratch root is this machine's root file system under an overlay (a private mount
namespace, writes go to tmp_path): the same Debian 12 and python3, but not a fresh one (this
host also has python3-venv, systemd and the test tools installed). The install creates the
virtualenv inside it through chroot and fetches the package's dependencies from PyPI."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNIT = ROOT / "systemd" / "dfs-sensor.service"
INSTALLED_BINARY = "/opt/dfs-sensor/venv/bin/dfs-sensor"
INSTALLED_UNIT = "/etc/systemd/system/dfs-sensor.service"
INSTALLED_SETTINGS = "/etc/default/dfs-sensor"
INSTALLED_DOC = "/usr/share/doc/dfs-sensor/README.md"
INSTALL_TIMEOUT = 600     # a virtualenv and the dependencies from PyPI, twice
EDITED_SETTING = 'DFS_SENSOR_INTERFACES="-i eth9"\n'

# Inside a private mount namespace: the overlay root, /dev and /proc for pip, a clean slate
# where the install writes, two installs (the second must keep the edited settings), then
# what the test checks, each into $OUT. Only the upper layer (tmp_path/upper) is written.
SCRIPT = r"""
set -eu
mount -t overlay overlay -o "lowerdir=/,upperdir=$UPPER,workdir=$WORK" "$R"
mount --bind /dev "$R/dev"
mount --bind /proc "$R/proc"
rm -rf "$R/opt/dfs-sensor" "$R/etc/systemd/system/dfs-sensor.service" "$R/etc/default/dfs-sensor" \
    "$R/usr/share/doc/dfs-sensor"
"$REPO/scripts/install-service" --root "$R" > "$OUT/install" 2>&1
printf '%s' "$EDITED" >> "$R/etc/default/dfs-sensor"
"$REPO/scripts/install-service" --root "$R" > "$OUT/reinstall" 2>&1
cp "$R/etc/default/dfs-sensor" "$OUT/settings"
set +e
systemd-analyze --root="$R" verify "$R$UNIT" > "$OUT/verify" 2>&1; echo $? > "$OUT/verify.rc"
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
def installed(tmp_path_factory) -> dict[str, str]:
    """What the checks read after scripts/install-service ran twice into a scratch root."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (scripts/setup --test installs systemd)")
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for a private mount namespace")
    base = tmp_path_factory.mktemp("scratch-root")
    for d in ("upper", "work", "root", "out"):
        (base / d).mkdir()
    env = {"UPPER": str(base / "upper"), "WORK": str(base / "work"), "R": str(base / "root"),
           "OUT": str(base / "out"), "REPO": str(ROOT), "UNIT": INSTALLED_UNIT, "BINARY": INSTALLED_BINARY,
           "EDITED": EDITED_SETTING, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(base)}
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", SCRIPT],
                          env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    out = {p.name: p.read_text() for p in (base / "out").iterdir()}
    assert done.returncode == 0, done.stderr + "".join(out.values())
    out["upper"] = str(base / "upper")
    return out


@pytest.mark.root
def test_installed_unit_passes_systemd_analyze_verify(installed):
    assert installed["verify.rc"].strip() == "0", installed["verify"]
    assert installed["verify"] == ""


@pytest.mark.root
def test_installed_execstart_binary_runs_help_from_its_own_virtualenv(installed):
    assert installed["help.rc"].strip() == "0", installed["help"]
    assert "Usage: dfs-sensor" in installed["help"] and "replay" in installed["help"]
    # The package itself is in the virtualenv, not a link back to this checkout.
    assert installed["module"].startswith("/opt/dfs-sensor/venv/lib/"), installed["module"]
    packages = {line.split("==")[0].lower() for line in installed["packages"].splitlines()}
    assert {"dfs-sensor", "click", "impacket", "pyshark"} <= packages
    assert not packages & {"scapy", "pytest", "hypothesis"}      # test-only dependencies stay out


@pytest.mark.root
def test_install_writes_the_unit_its_settings_and_documentation_and_keeps_edited_settings(installed):
    upper = Path(installed["upper"])
    assert (upper / INSTALLED_UNIT.lstrip("/")).read_text() == UNIT.read_text()
    assert (upper / INSTALLED_DOC.lstrip("/")).read_text() == (ROOT / "README.md").read_text()
    assert installed["settings"] == (ROOT / "systemd" / "dfs-sensor.env").read_text() + EDITED_SETTING
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
