"""Settings read from the environment (pydantic-settings), shared by every service."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.auth import TokenService
from shared.clock import Clock, OffsetClock, SystemClock


class KafkaSettings(BaseSettings):
    """Where the broker is, how to talk to it securely, and the topic names."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = "localhost:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    events_topic: str = "chibo.events.v1"
    commands_topic: str = "chibo.commands.v1"
    dlq_topic: str = "chibo.commands.dlq.v1"
    # Events a consumer could not read (malformed, or a schema it cannot handle).
    events_dlq_topic: str = "chibo.events.dlq.v1"
    partitions: int = 6
    replication_factor: int = 1
    # Services create missing topics at start-up; a managed cluster may forbid that.
    create_topics: bool = True


class ServiceSettings(BaseSettings):
    """What every service needs: identity, HTTP port, database and broker."""

    model_config = SettingsConfigDict(extra="ignore")

    service_name: str = "chibo"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    database_url: str = "postgresql://postgres@127.0.0.1:55432/chibo"
    db_pool_min: int = 1
    db_pool_max: int = 10
    log_level: str = "INFO"
    log_json: bool = True
    # Events a consumer reads and applies in one transaction.
    consumer_batch_size: int = 500
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    # HMAC key for bearer tokens (see ``tokens``).
    auth_jwt_secret: SecretStr | None = None
    # Test deployments only: a file holding seconds to add to the clock.
    clock_offset_file: Path | None = None

    def clock(self) -> Clock:
        return OffsetClock(self.clock_offset_file) if self.clock_offset_file else SystemClock()

    def tokens(self) -> TokenService:
        """The bearer-token verifier; a service that needs one refuses to start without it."""
        if self.auth_jwt_secret is None or len(self.auth_jwt_secret) < 32:
            raise SystemExit("AUTH_JWT_SECRET must be set to at least 32 characters")
        return TokenService(self.auth_jwt_secret)
