"""A camera frame saved as a picture the technician can look at (PNG or JPEG, with PyAV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pinkbutton.hal.base import VideoFrame

# suffix -> (PyAV encoder, pixel format it takes)
_FORMATS = {".png": ("png", "rgb24"), ".jpg": ("mjpeg", "yuvj420p"),
            ".jpeg": ("mjpeg", "yuvj420p")}


class SnapshotError(Exception):
    """The picture cannot be written (unknown suffix, encoder error)."""


def write_snapshot(frame: VideoFrame, path: Path) -> None:
    import av
    import av.error

    try:
        codec_name, pix_fmt = _FORMATS[Path(path).suffix.lower()]
    except KeyError:
        raise SnapshotError("the file name must end in .png, .jpg or .jpeg") from None
    w, h = frame.width, frame.height
    planes = np.frombuffer(frame.data, dtype=np.uint8, count=w * h * 3 // 2)
    picture = av.VideoFrame.from_ndarray(planes.reshape(h * 3 // 2, w), format="yuv420p")
    codec = av.CodecContext.create(codec_name, "w")
    codec.width, codec.height, codec.pix_fmt = w, h, pix_fmt  # type: ignore[attr-defined]
    try:
        packets = codec.encode(picture.reformat(format=pix_fmt))  # type: ignore[attr-defined]
        packets += codec.encode(None)  # type: ignore[attr-defined]
    except av.error.FFmpegError as e:
        raise SnapshotError(f"{codec_name} encoder: {e}") from None
    Path(path).write_bytes(b"".join(bytes(p) for p in packets))
