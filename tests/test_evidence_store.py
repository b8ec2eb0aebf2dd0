"""The evidence store's contract (tools/controlroom/evidence_store.py): every implementation
must pass the same tests. The local directory runs always; the S3 implementation runs against
a real S3-compatible server (e.g. a local MinIO) when one is named in the environment:

    PINKBUTTON_TEST_S3_ENDPOINT=http://127.0.0.1:9000 PINKBUTTON_TEST_S3_BUCKET=pb-test \\
    AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... pytest tests/test_evidence_store.py

and is skipped, with the reason printed, otherwise (no server is started by the tests)."""

from __future__ import annotations

import io
import os
import secrets
import stat
import threading

import pytest
from pinkbutton.tools.controlroom.evidence_store import (
    EvidenceStore,
    EvidenceStoreError,
    LocalEvidenceStore,
    S3EvidenceStore,
)


def _s3_store() -> EvidenceStore:
    endpoint = os.environ.get("PINKBUTTON_TEST_S3_ENDPOINT")
    bucket = os.environ.get("PINKBUTTON_TEST_S3_BUCKET", "pinkbutton-test")
    if not endpoint:
        reason = "S3 contract skipped: set PINKBUTTON_TEST_S3_ENDPOINT (e.g. a local MinIO)"
        print(reason)
        pytest.skip(reason)
    try:
        import boto3  # pyright: ignore[reportMissingImports]
    except ImportError:
        reason = "S3 contract skipped: boto3 is not installed (pip install boto3)"
        print(reason)
        pytest.skip(reason)
    client = boto3.client("s3", endpoint_url=endpoint)
    try:
        client.create_bucket(Bucket=bucket)
    except Exception:  # noqa: BLE001 - it exists already
        pass
    return S3EvidenceStore(bucket, prefix=f"test-{secrets.token_hex(4)}", client=client)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> EvidenceStore:
    if request.param == "local":
        return LocalEvidenceStore(tmp_path / "evidence")
    return _s3_store()


def test_put_bytes_then_read_exists_and_list(store):
    assert store.list() == [] and not store.exists("pb-1-a.complete.json")
    store.put("pb-1-a.complete.json", b'{"sha256": "x"}')
    store.put("pb-1-b.complete.json", b"second")
    store.put("pb-2-a.mp4", b"\x00" * 10)
    assert store.exists("pb-1-a.complete.json")
    assert store.read("pb-1-a.complete.json") == b'{"sha256": "x"}'
    with store.open("pb-2-a.mp4") as f:
        assert f.read() == b"\x00" * 10
    assert store.list("pb-1-") == ["pb-1-a.complete.json", "pb-1-b.complete.json"]
    assert store.list() == ["pb-1-a.complete.json", "pb-1-b.complete.json", "pb-2-a.mp4"]


def test_put_replaces_whole_object_and_file_objects_stream(store):
    store.put("x.mp4", b"old and longer than the new one")
    big = secrets.token_bytes(3 * (1 << 20) + 17)  # more than one copy chunk
    store.put("x.mp4", io.BytesIO(big))
    assert store.read("x.mp4") == big
    store.put("x.mp4", b"new")
    assert store.read("x.mp4") == b"new"


def test_put_file_stores_a_finished_local_file(store, tmp_path):
    src = tmp_path / "work" / "done.mp4"
    src.parent.mkdir()
    src.write_bytes(b"finished evidence")
    store.put_file("pb-1-a.complete.mp4", src, keep=True)
    assert src.exists() and store.read("pb-1-a.complete.mp4") == b"finished evidence"
    store.put_file("pb-1-a.packets", src, keep=False)
    assert not src.exists() and store.read("pb-1-a.packets") == b"finished evidence"


def test_missing_object_is_a_one_line_error(store):
    with pytest.raises(EvidenceStoreError, match="nope.mp4"):
        store.open("nope.mp4")


@pytest.mark.parametrize("name", ["../escape.mp4", "a/b.mp4", ".hidden", "", "x" * 300,
                                  "bad\nname", "/abs.mp4"])
def test_names_cannot_leave_the_store(store, name):
    with pytest.raises(EvidenceStoreError, match="not allowed"):
        store.put(name, b"x")
    with pytest.raises(EvidenceStoreError, match="not allowed"):
        store.exists(name)


def test_concurrent_puts_of_one_name_leave_one_whole_object(store):
    """Two receivers finalising the same name at once (they should not, but a put must
    stay atomic): the object is one writer's bytes, whole; no temp file is listed."""
    bodies = [bytes([n]) * (1 << 20) for n in range(1, 5)]
    threads = [threading.Thread(target=store.put, args=("same.complete.mp4", b))
               for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert store.read("same.complete.mp4") in bodies
    assert store.list() == ["same.complete.mp4"]


def test_location_names_the_object(store):
    where = store.location("pb-1-a.complete.mp4")
    assert where.endswith("pb-1-a.complete.mp4")


# -- the local directory only ---------------------------------------------------------------


def test_local_store_keeps_the_evidence_directory_layout_and_modes(tmp_path):
    directory = tmp_path / "evidence"
    store = LocalEvidenceStore(directory)
    store.put("pb-1-a.complete.json", b"{}")
    path = directory / "pb-1-a.complete.json"
    assert store.local_path("pb-1-a.complete.json") == path and path.read_bytes() == b"{}"
    assert store.location("pb-1-a.complete.json") == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert sorted(os.listdir(directory)) == ["pb-1-a.complete.json"], "no temp file left"


def test_local_put_file_beside_its_name_is_a_rename(tmp_path):
    directory = tmp_path / "evidence"
    store = LocalEvidenceStore(directory)
    directory.mkdir()
    tmp = directory / "pb-1-a.complete.mp4.tmp"
    tmp.write_bytes(b"remuxed")
    inode = tmp.stat().st_ino
    store.put_file("pb-1-a.complete.mp4", tmp, keep=False)
    out = directory / "pb-1-a.complete.mp4"
    assert out.read_bytes() == b"remuxed" and out.stat().st_ino == inode and not tmp.exists()


def test_local_put_that_fails_leaves_nothing_and_says_why(tmp_path):
    blocked = tmp_path / "evidence"
    blocked.write_bytes(b"a file where the directory should be")
    with pytest.raises(EvidenceStoreError, match="cannot store b.mp4"):
        LocalEvidenceStore(blocked).put("b.mp4", b"2")
    assert sorted(os.listdir(tmp_path)) == ["evidence"]


def test_s3_store_without_boto3_says_what_to_install():
    try:
        import boto3  # noqa: F401  # pyright: ignore[reportMissingImports]
    except ImportError:
        with pytest.raises(EvidenceStoreError, match="pip install boto3"):
            S3EvidenceStore("bucket")
    else:
        pytest.skip("boto3 is installed")


# -- the room's backfill puts what it confirmed into the store ------------------------------


def test_backfill_puts_the_confirmed_evidence_into_a_store_that_is_not_its_directory(tmp_path):
    """A store elsewhere than the working directory (as S3 is): the complete file and its
    manifest are put there (none left in the working directory), and so is the packet log
    once confirmed; the manifest's hash is the stored object's."""
    import hashlib
    import json

    from pinkbutton.firmware import protocol as p
    from pinkbutton.firmware.media.envelope import Reassembler, decode_envelope
    from pinkbutton.hal.clock import FakeClock
    from pinkbutton.tools.controlroom.backfill import BackfillManager

    from tests.test_backfill import ALERT, Sent, envelopes
    from tests.test_evidence import encode_audio, encode_video

    media = sorted(encode_video(frames=15) + encode_audio()[:50],
                   key=lambda x: (x.pts_us, x.stream))
    work, shared = tmp_path / "work", tmp_path / "shared"
    store, clock, sent = LocalEvidenceStore(shared), FakeClock(), Sent()
    base = f"pb-test-0001-{ALERT}"
    mgr = BackfillManager(work, send_cmd=sent, out=lambda _l: None, clock=clock, store=store)
    mgr.open(ALERT, "pb-test-0001", f"{base}.packets")
    live = Reassembler()
    messages = envelopes(media)
    for msgs in messages.values():
        for m in msgs:
            rp = live.add(decode_envelope(m))
            if rp is not None:
                mgr.record(ALERT, rp)
    mgr.on_event(p.DeviceEvent("pb-test-0001", "stream_end", "t",
                               {"alert_id": ALERT, "seq_count": len(messages)}))
    clock.advance(1.0)
    mgr.tick(force=True)
    done = mgr.completion(ALERT)
    assert done is not None and sent.cmds[-1][0] == "evidence_complete"
    assert store.list() == [f"{base}.complete.json", f"{base}.complete.mp4", f"{base}.packets"]
    assert done.path == shared / f"{base}.complete.mp4"
    manifest = json.loads(store.read(f"{base}.complete.json"))
    assert manifest["gaps"] == [] and manifest["packets"] == len(messages)
    assert manifest["sha256"] == hashlib.sha256(store.read(f"{base}.complete.mp4")).hexdigest()
    assert sorted(x.name for x in work.iterdir()) == [f"{base}.packets"], "working file only"
    assert store.read(f"{base}.packets") == (work / f"{base}.packets").read_bytes()
