"""A 64-bit number drawn into a picture as big black/white blocks, and read back.

The fake camera draws each frame's capture time (µs) with `draw_stamp`; whoever
decodes the video at the far end reads it with `read_stamp` and subtracts it from
"now" to get glass-to-glass latency. The blocks are large (width/40 px square,
16 px at 640 wide, one H.264 macroblock) and far apart in brightness, so they
survive a low-bitrate encode and a scale to another size (the block size follows
the picture width, so a 320-wide decode of a 640-wide frame reads the same).

Layout, two rows of 40 blocks across the top of the picture, read row by row:
4 sync blocks (1010), 64 value bits (most significant first), CRC-8 of the 8 value
bytes, 4 sync blocks (0101). A picture without a stamp (covered camera, a real
scene) fails the sync, the block-contrast or the CRC check and reads as None.
"""

from __future__ import annotations

import numpy as np

BLOCKS_PER_ROW = 40
ROWS = 2
BLACK = 16  # video-range black and white: what an encoder expects to keep
WHITE = 235

_SYNC_START = (1, 0, 1, 0)
_SYNC_END = (0, 1, 0, 1)
# A block whose centre is between these is neither black nor white: not a stamp.
_LOW, _HIGH = 80, 176


def block_size(width: int) -> int:
    """Side of one block in pixels for a picture `width` wide."""
    return width // BLOCKS_PER_ROW


def _crc8(data: bytes) -> int:
    """CRC-8 (polynomial 0x07), enough to reject a misread block or two."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _bits(value: int, nbits: int) -> list[int]:
    return [(value >> (nbits - 1 - i)) & 1 for i in range(nbits)]


def _check_size(y_plane: np.ndarray) -> int:
    if y_plane.ndim != 2:
        raise ValueError(f"stamp needs a 2-D luma plane, got shape {y_plane.shape}")
    height, width = y_plane.shape
    size = block_size(width)
    if size < 2 or height < ROWS * size:
        raise ValueError(f"picture {width}x{height} is too small for a stamp")
    return size


def draw_stamp(y_plane: np.ndarray, value_us: int) -> None:
    """Draw `value_us` (0 <= value < 2**64) into the top rows of the luma plane, in place."""
    if not 0 <= value_us < 1 << 64:
        raise ValueError(f"stamp value {value_us} does not fit in 64 bits")
    size = _check_size(y_plane)
    payload = value_us.to_bytes(8, "big")
    bits = [*_SYNC_START, *_bits(value_us, 64), *_bits(_crc8(payload), 8), *_SYNC_END]
    levels = np.where(np.array(bits, dtype=bool), WHITE, BLACK).astype(np.uint8)
    blocks = levels.reshape(ROWS, BLOCKS_PER_ROW)
    y_plane[: ROWS * size, : BLOCKS_PER_ROW * size] = np.repeat(
        np.repeat(blocks, size, axis=0), size, axis=1
    )


def read_stamp(y_plane: np.ndarray) -> int | None:
    """The value drawn by `draw_stamp`, or None when there is no intact stamp."""
    try:
        size = _check_size(y_plane)
    except ValueError:
        return None
    # Average the centre half of every block: edges are where the codec smears.
    area = y_plane[: ROWS * size, : BLOCKS_PER_ROW * size].astype(np.float32)
    blocks = area.reshape(ROWS, size, BLOCKS_PER_ROW, size)
    lo, hi = size // 4, size - size // 4
    means = blocks[:, lo:hi, :, lo:hi].mean(axis=(1, 3)).reshape(-1)
    if np.any((means > _LOW) & (means < _HIGH)):
        return None
    bits = [int(m >= _HIGH) for m in means]
    if tuple(bits[:4]) != _SYNC_START or tuple(bits[-4:]) != _SYNC_END:
        return None
    value = int("".join(map(str, bits[4:68])), 2)
    crc = int("".join(map(str, bits[68:76])), 2)
    if _crc8(value.to_bytes(8, "big")) != crc:
        return None
    return value
