"""Kafka TLS and SASL/SCRAM settings, as a Kubernetes deployment gives them (environment
variables, deploy/k8s/overlays/sasl-scram), turned into the FastStream security object
and the raw aiokafka keyword arguments by shared/kafka.py.

No broker is needed: the objects are built and inspected. The CA file is the system's
CA bundle (the `cryptography` package, which could mint a self-signed CA, is not a
dependency of the project).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faststream.kafka.security import parse_security
from faststream.security import SASLScram256, SASLScram512

from shared.kafka import aiokafka_client_kwargs, faststream_security
from shared.settings import KafkaSettings, ServiceSettings

CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # Alpine, macOS
)


@pytest.fixture
def ca_file() -> str:
    for candidate in CA_BUNDLES:
        if Path(candidate).is_file():
            return candidate
    try:
        import certifi  # installed with httpx
    except ImportError:  # pragma: no cover
        pytest.skip("no CA bundle on this system")
    return certifi.where()


@pytest.fixture
def clean_kafka_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No KAFKA_* variable from the caller's environment leaks into the settings."""
    for name in KafkaSettings.model_fields:
        monkeypatch.delenv(f"KAFKA_{name.upper()}", raising=False)
    return monkeypatch


def sasl_ssl_settings(env: pytest.MonkeyPatch, ca_file: str) -> KafkaSettings:
    """What overlays/sasl-scram sets: the ConfigMap's keys and the Secret's password."""
    env.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-0.example.org:9096,kafka-1.example.org:9096")
    env.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    env.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    env.setenv("KAFKA_SASL_USERNAME", "chibo")
    env.setenv("KAFKA_SASL_PASSWORD", "s3cret-scram-password")
    env.setenv("KAFKA_SSL_CAFILE", ca_file)
    return KafkaSettings()


def test_settings_read_the_security_variables_from_the_environment(
    clean_kafka_env: pytest.MonkeyPatch, ca_file: str
) -> None:
    settings = sasl_ssl_settings(clean_kafka_env, ca_file)
    assert settings.security_protocol == "SASL_SSL"
    assert settings.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.sasl_username == "chibo"
    assert settings.sasl_password is not None
    assert settings.sasl_password.get_secret_value() == "s3cret-scram-password"
    assert "s3cret" not in repr(settings)  # a SecretStr never shows in logs or reprs
    assert settings.ssl_cafile == ca_file
    # The services build their Kafka settings as part of ServiceSettings: same reading.
    assert ServiceSettings().kafka == settings


def test_sasl_ssl_scram_512_gives_faststream_a_scram512_security_with_tls(
    clean_kafka_env: pytest.MonkeyPatch, ca_file: str
) -> None:
    security = faststream_security(sasl_ssl_settings(clean_kafka_env, ca_file))

    assert isinstance(security, SASLScram512)
    assert security.username == "chibo"
    assert security.password == "s3cret-scram-password"
    assert isinstance(security.ssl_context, ssl.SSLContext)
    assert security.use_ssl is True
    context = security.ssl_context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.cert_store_stats()["x509_ca"] > 0  # the CA file was loaded

    # What the FastStream broker hands aiokafka for it.
    parsed = parse_security(security)
    assert parsed["security_protocol"] == "SASL_SSL"
    assert parsed["sasl_mechanism"] == "SCRAM-SHA-512"
    assert parsed["ssl_context"] is context


def test_sasl_ssl_scram_512_raw_aiokafka_kwargs(
    clean_kafka_env: pytest.MonkeyPatch, ca_file: str
) -> None:
    kwargs = aiokafka_client_kwargs(sasl_ssl_settings(clean_kafka_env, ca_file))

    assert kwargs["bootstrap_servers"] == "kafka-0.example.org:9096,kafka-1.example.org:9096"
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "chibo"
    assert kwargs["sasl_plain_password"] == "s3cret-scram-password"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.cert_store_stats()["x509_ca"] > 0


async def test_the_kwargs_are_accepted_by_aiokafka_clients(
    clean_kafka_env: pytest.MonkeyPatch, ca_file: str
) -> None:
    """The relay, admin and lag monitor build clients from these kwargs: aiokafka checks the
    combination (protocol, mechanism, context) in the constructor, without connecting."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    kwargs = aiokafka_client_kwargs(sasl_ssl_settings(clean_kafka_env, ca_file))
    admin = AIOKafkaAdminClient(**kwargs)
    consumer = AIOKafkaConsumer(**kwargs, enable_auto_commit=False)
    try:
        assert admin._client._security_protocol == "SASL_SSL"
        assert consumer._client._sasl_mechanism == "SCRAM-SHA-512"
        assert consumer._client._ssl_context is kwargs["ssl_context"]
    finally:
        await consumer.stop()
        await admin.close()


def test_sasl_plaintext_scram_256_has_no_tls(clean_kafka_env: pytest.MonkeyPatch) -> None:
    env = clean_kafka_env
    env.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    env.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    env.setenv("KAFKA_SASL_USERNAME", "chibo")
    env.setenv("KAFKA_SASL_PASSWORD", "another-password")
    # A CA file set by mistake must not turn TLS on for a plaintext listener.
    env.setenv("KAFKA_SSL_CAFILE", "/nonexistent/ca.crt")
    settings = KafkaSettings()

    security = faststream_security(settings)
    assert isinstance(security, SASLScram256)
    assert security.username == "chibo"
    assert security.password == "another-password"
    assert security.ssl_context is None
    assert security.use_ssl is False
    assert parse_security(security)["security_protocol"] == "SASL_PLAINTEXT"

    kwargs = aiokafka_client_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["sasl_plain_username"] == "chibo"
    assert kwargs["sasl_plain_password"] == "another-password"
    assert "ssl_context" not in kwargs


def test_plaintext_has_neither_sasl_nor_tls(clean_kafka_env: pytest.MonkeyPatch) -> None:
    settings = KafkaSettings()
    assert faststream_security(settings) is None
    kwargs = aiokafka_client_kwargs(settings)
    assert kwargs == {"bootstrap_servers": "localhost:9092", "security_protocol": "PLAINTEXT"}


def test_a_missing_ca_file_fails_at_start_up_not_at_first_connection(
    clean_kafka_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A Secret mounted at the wrong path shows as a clear start-up error (pod crash-loop
    with the path in the log), not as a TLS failure later."""
    env = clean_kafka_env
    env.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    env.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    env.setenv("KAFKA_SSL_CAFILE", str(tmp_path / "missing" / "ca.crt"))
    with pytest.raises(FileNotFoundError):
        faststream_security(KafkaSettings())
