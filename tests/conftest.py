"""Shared fixtures: a dev PKI and a real mosquitto over mTLS (see tools/pki.py, harness/broker.py)."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from pinkbutton.tools.pki import ca_paths, controlroom_paths, device_paths, init_dev_pki

from harness.broker import BrokerError, Mosquitto, find_mosquitto
from harness.pg import Postgres, PostgresError, find_bin

TEST_DEVICES = ("pb-test-0001", "pb-test-0002", "pb-test-0003")


def _require_mosquitto() -> None:
    try:
        find_mosquitto()
    except BrokerError as exc:
        pytest.skip(f"real-broker test skipped: {exc}")


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    init_dev_pki(directory, TEST_DEVICES)
    return directory


@pytest.fixture(scope="session")
def broker(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One broker for the whole session; tests must not kill it (use `fresh_broker`)."""
    _require_mosquitto()
    with Mosquitto(tmp_path_factory.mktemp("broker"), pki_dir) as running:
        yield running


@pytest.fixture
def fresh_broker(pki_dir: Path, tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of this test's own (work dir, port), free to kill, pause and restart."""
    _require_mosquitto()
    with Mosquitto(tmp_path / "broker", pki_dir) as running:
        yield running


MqttClientFactory = Callable[..., mqtt.Client]


@pytest.fixture
def mqtt_client() -> Iterator[MqttClientFactory]:
    """Factory: ``mqtt_client(pki_dir, identity, broker)`` -> connected paho v2 MQTT v5 client.

    identity "controlroom" uses controlroom.pem, anything else devices/<identity>.pem. The
    network loop runs in paho's thread; callbacks set by the test run there. Clients are
    disconnected at teardown.
    """
    made: list[mqtt.Client] = []

    def connect(
        pki_dir: Path,
        identity: str,
        broker: Mosquitto,
        *,
        client_id: str | None = None,
        clean_start: bool = True,
        properties: Properties | None = None,
        timeout: float = 5.0,
    ) -> mqtt.Client:
        paths = (
            controlroom_paths(pki_dir)
            if identity == "controlroom"
            else device_paths(pki_dir, identity)
        )
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"{identity}-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5,
        )
        client.tls_set(
            ca_certs=str(ca_paths(pki_dir).cert), certfile=str(paths.cert), keyfile=str(paths.key)
        )
        connected = threading.Event()
        outcome: list[object] = []

        def on_connect(_client, _userdata, _flags, reason_code, _properties) -> None:
            outcome.append(reason_code)  # paho network thread
            connected.set()

        client.on_connect = on_connect
        made.append(client)
        client.connect(broker.host, broker.port, clean_start=clean_start, properties=properties)
        client.loop_start()
        if not connected.wait(timeout):
            raise AssertionError(f"{identity}: no CONNACK from {broker.host}:{broker.port}")
        if outcome[0].is_failure:  # type: ignore[attr-defined]
            raise AssertionError(f"{identity}: CONNACK refused: {outcome[0]}")
        client.on_connect = None
        return client

    yield connect
    for client in made:
        client.disconnect()
        client.loop_stop()


# -- PostgreSQL (issue 13): one throwaway cluster per test session, a database per test ------
# harness/pg.py: initdb in a temp dir, postgres on 127.0.0.1 at a free port. The store tests
# take `db_target` and run once on a SQLite file and once on a PostgreSQL database.


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    try:
        find_bin("initdb")
        import psycopg  # noqa: F401
    except (PostgresError, ImportError) as exc:
        pytest.skip(f"PostgreSQL test skipped: {exc}")
    with Postgres(durable=False) as running:
        yield running


@pytest.fixture
def pg_url(postgres: Postgres) -> Iterator[str]:
    """A fresh, empty database of this test's own: its postgresql:// URL."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """What `--db` takes: a SQLite file, then a PostgreSQL URL."""
    if request.param == "sqlite":
        return tmp_path / "incidents.db"
    return request.getfixturevalue("pg_url")
