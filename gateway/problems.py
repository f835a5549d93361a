"""Configuration problems, each located as ``file: key.path: message``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    file: str
    loc: str
    message: str

    def __str__(self) -> str:
        if self.loc:
            return f"{self.file}: {self.loc}: {self.message}"
        return f"{self.file}: {self.message}"


class ConfigError(Exception):
    """Everything wrong with a configuration, reported at once."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems
