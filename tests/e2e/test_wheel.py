"""The package as a user gets it: an sdist built from the source tree, a wheel built from that
sdist, the wheel installed in a fresh venv outside the repository, and `cancel-gateway demo`
run from there answering a pasted curl line."""

from __future__ import annotations

import email
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.test_demo import BANNER_END, REPO, Curl, start, stop
from tests.services import free_port

pytestmark = pytest.mark.e2e

# What .gitignore names: the machinery and what running the tests leaves behind.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", ".*_cache", ".schemathesis",
    "*.db", "*.db-*", "*.sqlite3",
)  # fmt: skip


@dataclass(frozen=True)
class Built:
    source: Path
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Venv:
    root: Path
    outside: Path  # a working directory with no checkout in it

    @property
    def bin(self) -> Path:
        return self.root / "bin"


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(word) for word in command],
        cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The sdist, then the wheel built from the unpacked sdist (what `python -m build` does),
    so a file the sdist lacks is missing from the wheel too. From a copy of the source tree:
    building writes beside the sources."""
    root = tmp_path_factory.mktemp("build")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    out = root / "dist"
    # --no-isolation: the build backend comes from this venv (the dev extra), not the network.
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source)
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Built(source, sdist, wheel)


@pytest.fixture(scope="module")
def venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A new venv holding the wheel. Its third-party packages are this venv's, reached through
    a .pth line placed after its own site-packages (quick, and no network); `gateway` itself
    comes only from the wheel, as the test checks."""
    root = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", "--without-pip", root)
    python = root / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
         "--no-index", built.wheel)  # fmt: skip
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    (Path(site.strip()) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return Venv(root, tmp_path_factory.mktemp("elsewhere"))


async def test_the_installed_wheel_runs_the_demo_outside_the_repository(
    venv: Venv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)
    where = _run(
        venv.bin / "python", "-c", "import gateway; print(gateway.__file__)", cwd=venv.outside
    )
    assert Path(where.strip()).is_relative_to(venv.root)

    port = free_port()
    process, banner = await start(
        "demo", "--port", str(port), "--simulators-port", str(free_port()),
        until=BANNER_END, command=[str(venv.bin / "cancel-gateway")], cwd=venv.outside,
    )  # fmt: skip
    try:
        curl = next(Curl.parse(line) for line in banner if line.startswith("curl "))
        async with (
            aiohttp.ClientSession() as session,
            session.request(curl.method, curl.url, headers=curl.headers, data=curl.body) as resp,
        ):
            assert resp.status == 200, await resp.text()
            envelope = await resp.json()
    finally:
        _, stderr = await stop(process, signal.SIGINT)
    assert process.returncode == 0, stderr
    assert envelope["status"] == "cancelled"
    assert curl.url == f"http://127.0.0.1:{port}/v1/cancellations"


def test_the_sdist_holds_the_source_tree_its_tests_need(built: Built) -> None:
    with tarfile.open(built.sdist) as archive:
        names = {name.partition("/")[2] for name in archive.getnames()}
    if (REPO / ".git").exists():
        listed = _run("git", "-C", REPO, "ls-files").splitlines()
        tracked = {name for name in listed if (built.source / name).is_file()}
    else:  # run from an unpacked sdist: the tree is what was shipped
        tracked = {str(p.relative_to(built.source)) for p in built.source.rglob("*") if p.is_file()}
    assert {"LICENSE", "MANIFEST.in", "tests/conftest.py", "config/gateway.yaml"} <= names
    assert sorted(tracked - names) == []


def test_the_wheel_holds_the_package_its_data_and_the_licence(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        dist_info = metadata.partition("/")[0]
        fields = email.message_from_bytes(archive.read(metadata))
        licence = archive.read(f"{dist_info}/licenses/LICENSE").decode()
    assert {name.partition("/")[0] for name in names} == {"gateway", dist_info}
    assert "gateway/demo.yaml" in names
    assert {f"gateway/providers/{p}.yaml" for p in ("stateset", "shipper")} <= names
    console = ("index.html", "console.js", "console.css", "favicon.svg")
    assert {f"gateway/console/{name}" for name in console} <= names
    assert fields["License-Expression"] == "Apache-2.0"
    assert fields.get_all("License-File") == ["LICENSE"]
    assert "Apache License" in licence
    assert "Version 2.0, January 2004" in licence
