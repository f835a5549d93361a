"""The image's inputs, checked where no Docker engine runs: docker/requirements.txt pins exactly
what pyproject.toml needs at versions it allows, the dependencies' layer comes before the
source, and the build context leaves local databases out."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "docker" / "requirements.txt"
IMAGE_EXTRAS = ("redis", "postgres", "otel")
# Where the image runs: python:3.11-slim, Linux; its tag follows 3.11's patch releases.
IMAGE_MARKERS = {
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "python_version": "3.11",
    "python_full_version": "3.11.9",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def _pins() -> dict[NormalizedName, Version]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        requirement = line.partition("#")[0].strip()
        if requirement:
            name, _, version = requirement.partition("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    marker = requirement.marker
    return marker is None or any(
        marker.evaluate({**IMAGE_MARKERS, "extra": extra}) for extra in extras | {""}
    )


def _image_requirements() -> list[Requirement]:
    """What the image installs, directly and through each package's own requirements (read
    from this venv's copy of the package)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    direct = list(project["dependencies"])
    for extra in IMAGE_EXTRAS:
        direct += project["optional-dependencies"][extra]
    pending = [r for r in map(Requirement, direct) if _applies(r, set())]
    needed: list[Requirement] = []
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    while pending:
        requirement = pending.pop()
        needed.append(requirement)
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            texts = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            pytest.fail(f"{requirement.name} is needed but not installed here (pip install -e .)")
        for text in texts:
            child = Requirement(text)
            if _applies(child, set(requirement.extras)):
                pending.append(child)
    return needed


def test_the_image_lock_pins_exactly_what_the_package_needs_at_allowed_versions() -> None:
    pins = _pins()
    requirements = _image_requirements()
    assert sorted({canonicalize_name(r.name) for r in requirements} ^ pins.keys()) == []
    refused = [
        f"{r} does not allow {pins[canonicalize_name(r.name)]}"
        for r in requirements
        if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)
    ]
    assert refused == []


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest)
        for word, _, rest in (line.partition(" ") for line in lines)
        if word and not word.startswith("#")
    ]


def test_the_image_installs_its_dependencies_before_it_copies_the_source() -> None:
    """A change to the source rebuilds only the layers after the dependencies'."""
    instructions = _instructions()
    install = next(
        i for i, (word, rest) in enumerate(instructions)
        if word == "RUN" and "--requirement docker/requirements.txt" in rest
    )  # fmt: skip
    copied = [rest.split()[:-1] for word, rest in instructions[:install] if word == "COPY"]
    assert copied == [["docker/requirements.txt"]]
    source = next(i for i, (word, rest) in enumerate(instructions) if rest.startswith("gateway "))
    assert install < source


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore matching: `*` stays within a folder, `**` spans folders, and the
    last matching pattern wins (`!` re-includes)."""
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        regex = "".join(
            "(.*/)?" if part == "**/" else "[^/]*" if part == "*" else re.escape(part)
            for part in re.split(r"(\*\*/|\*)", body)
        )
        if re.fullmatch(regex + "(/.*)?", path):
            ignored = not negated
    return ignored


def test_the_docker_context_leaves_out_local_databases_and_keeps_the_source() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for database in ("cancel-gateway.db", "cancel-gateway.db-wal", "var/ledger.db-shm"):
        assert _ignored(database, patterns), database
    for needed in ("docker/requirements.txt", "gateway/cli.py", "gateway/demo.yaml", "LICENSE"):
        assert not _ignored(needed, patterns), needed
