"""Where finished evidence goes: a store every receiver of a share group can reach.

`EvidenceStore` is the interface: flat object names (`<device>-<alert>.complete.mp4`, ...),
`put` (bytes or a file object), `put_file` (a finished local file), `open`, `exists`, `list`
(by name prefix), `location` (what an operator is shown). A `put` is atomic: a reader sees no
object or the whole object, never a part of it.

- `LocalEvidenceStore` (the default): a directory, the existing evidence directory, so the
  paths and file names the console's downloads and the README name stay the same. A put
  writes a temp file in the same directory (a name no other writer uses), fsyncs it and
  renames it over the name (`os.replace`, atomic on one file system), then fsyncs the
  directory. Files 0600, the directory 0700, like all incident data. A directory on a file
  system every receiver mounts (NFS, CephFS...) is today's shared store.
- `S3EvidenceStore`: an S3-compatible object store (AWS S3, MinIO, Ceph RGW...) through boto3,
  an optional dependency (`pip install boto3`, or the `s3` extra). A PUT is atomic by S3's
  semantics (an object appears only when its upload completed); a large file goes up as a
  multipart upload, visible only once `CompleteMultipartUpload` succeeded, and aborted on
  failure, so a crashed upload leaves no object.

The live `.mp4` and the packet log are appended to while an incident streams; they stay
working files in the evidence directory (tools/controlroom/media.py, backfill.py). What is
final (the complete file and its manifest, then the live parts and the packet log) is put
here once the owner of the incident confirmed it.

Names are checked (`check_name`): no path separators, no leading dot (temp files), at most
255 characters, so a device-supplied id can never reach outside the store.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import IO, Any, BinaryIO

from pinkbutton.firmware.durable import fsync_dir, open_private, private_dir

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
CHUNK = 1 << 20


class EvidenceStoreError(RuntimeError):
    """One-line reason an evidence object cannot be stored or read."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise EvidenceStoreError(f"evidence object name {name!r} is not allowed "
                                 "(letters, digits, '.', '_', '-'; no path, no leading dot)")
    return name


class EvidenceStore(ABC):
    """Finished evidence objects, by flat name. See the module's doc."""

    @abstractmethod
    def put(self, name: str, data: bytes | IO[bytes]) -> None:
        """Store `data` (bytes, or a binary file object read to its end) under `name`,
        atomically, replacing an object of that name."""

    def put_file(self, name: str, path: Path, *, keep: bool = True) -> None:
        """Store the local file `path` under `name`; with `keep=False` the local file is
        gone afterwards (moved, or uploaded and deleted)."""
        with open(path, "rb") as f:
            self.put(name, f)
        if not keep:
            Path(path).unlink(missing_ok=True)

    @abstractmethod
    def open(self, name: str) -> BinaryIO:
        """The object for reading (close it); EvidenceStoreError if it does not exist."""

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """The names starting with `prefix`, sorted; temp files of unfinished puts never."""

    @abstractmethod
    def location(self, name: str) -> str:
        """Where the object is, as shown to an operator (a path, or s3://bucket/key)."""

    def local_path(self, name: str) -> Path | None:
        """The object's file when the store is a local directory, else None."""
        return None

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()


class LocalEvidenceStore(EvidenceStore):
    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def _path(self, name: str) -> Path:
        return self.directory / check_name(name)

    def _temp(self, name: str) -> Path:
        # A leading dot: never listed, never a valid name; random: writers never collide.
        return self.directory / f".{name}.{secrets.token_hex(6)}.tmp"

    def put(self, name: str, data: bytes | IO[bytes]) -> None:
        target = self._path(name)
        tmp = self._temp(name)
        try:
            private_dir(self.directory, tighten=False)
            with open_private(tmp, "wb") as f:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    f.write(data)
                else:
                    shutil.copyfileobj(data, f, CHUNK)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            fsync_dir(self.directory)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise EvidenceStoreError(f"cannot store {name} in {self.directory}: "
                                     f"{e.strerror or e}") from None

    def put_file(self, name: str, path: Path, *, keep: bool = True) -> None:
        target = self._path(name)
        path = Path(path)
        if path.resolve() == target.resolve():
            return  # already in place
        if keep or path.parent.resolve() != self.directory.resolve():
            super().put_file(name, path, keep=keep)
            return
        try:  # a finished file beside its name: fsync, rename (atomic), fsync the directory
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(path, 0o600)
            os.replace(path, target)
            fsync_dir(self.directory)
        except OSError as e:
            raise EvidenceStoreError(f"cannot store {name} in {self.directory}: "
                                     f"{e.strerror or e}") from None

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb")
        except OSError as e:
            raise EvidenceStoreError(f"cannot read {name} from {self.directory}: "
                                     f"{e.strerror or e}") from None

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def list(self, prefix: str = "") -> list[str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.startswith(prefix) and NAME.match(n)
                      and (self.directory / n).is_file())

    def location(self, name: str) -> str:
        return str(self._path(name))

    def local_path(self, name: str) -> Path | None:
        return self._path(name)


class S3EvidenceStore(EvidenceStore):
    """An S3-compatible bucket (boto3). `client`: a boto3 S3 client, or None to make one from
    `endpoint_url` and the usual AWS environment (credentials, region)."""

    def __init__(self, bucket: str, *, prefix: str = "", client: Any = None,
                 endpoint_url: str | None = None) -> None:
        if client is None:
            try:
                import boto3  # pyright: ignore[reportMissingImports]
            except ImportError:
                raise EvidenceStoreError("the S3 evidence store needs boto3: "
                                         "pip install boto3 (or the pinkbutton[s3] extra)"
                                         ) from None
            client = boto3.client("s3", endpoint_url=endpoint_url)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def _key(self, name: str) -> str:
        return self.prefix + check_name(name)

    def _fail(self, what: str, name: str, e: Exception) -> EvidenceStoreError:
        return EvidenceStoreError(f"cannot {what} {name} in s3://{self.bucket}/{self.prefix}: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}")

    def put(self, name: str, data: bytes | IO[bytes]) -> None:
        key = self._key(name)
        try:
            if isinstance(data, (bytes, bytearray, memoryview)):
                self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data))
            else:
                # upload_fileobj: multipart above its threshold; the object appears only on
                # CompleteMultipartUpload, and a failed upload is aborted.
                self.client.upload_fileobj(data, self.bucket, key)
        except Exception as e:  # noqa: BLE001 - botocore's errors, named in one line
            raise self._fail("store", name, e) from None

    def open(self, name: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
        except Exception as e:  # noqa: BLE001
            raise self._fail("read", name, e) from None

    def read(self, name: str) -> bytes:
        body = self.open(name)
        try:
            return body.read()
        finally:
            body.close()

    def exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(name))
            return True
        except Exception as e:  # noqa: BLE001
            code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail("look up", name, e) from None

    def list(self, prefix: str = "") -> list[str]:
        names: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(self.prefix):]
                    if NAME.match(name):
                        names.append(name)
        except Exception as e:  # noqa: BLE001
            raise self._fail("list", prefix + "*", e) from None
        return sorted(names)

    def location(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"
