"""The configuration file's schema: strict, frozen models. ``loader.py`` reads and checks it."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=65536, ge=256, le=16 * 1024 * 1024)
    workers: int = Field(default=1, ge=1, le=64)


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"


class CallerConfig(_Strict):
    """An inbound client. Its key is given plain (from the environment) or as a SHA-256."""

    name: Name
    key: SecretStr | None = None
    key_sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    connections: list[str] = Field(default_factory=list)  # globs; none means no access

    @field_validator("key")
    @classmethod
    def _long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return key

    @model_validator(mode="after")
    def _one_key(self) -> CallerConfig:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key or key_sha256")
        return self

    def digest(self) -> bytes:
        if self.key is not None:
            return hashlib.sha256(self.key.get_secret_value().encode()).digest()
        assert self.key_sha256 is not None
        return bytes.fromhex(self.key_sha256)


ParamValue = str | StrictBool | StrictInt | StrictFloat


class ConnectionConfig(_Strict):
    """One account at one provider: the routing key of a cancellation."""

    provider: Name
    base_url: str | None = None
    credentials: dict[str, SecretStr] = Field(default_factory=dict)
    params: dict[str, ParamValue] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=300)


class GatewayConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    providers: list[str] = Field(default_factory=list)  # more definition files or folders
    callers: list[CallerConfig] = Field(min_length=1)
    connections: dict[Name, ConnectionConfig] = Field(default_factory=dict)
