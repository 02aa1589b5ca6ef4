"""An image's format and size in pixels, read from its first bytes: PNG, JPEG, GIF and WebP.

Nothing is decoded: the header says what the file claims to be, and that is all a prompt's token
estimate needs. The provider decodes the image and refuses a broken one; a file whose header does
not read is refused here with words the user can act on.
"""

import struct
from dataclasses import dataclass

from chat.actions import ActionError

# The most pixels on a side any of the formats allows (WebP's and JPEG's limits are lower): a header
# claiming more is not an image.
MAX_SIDE = 65_535
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True, slots=True)
class ImageHeader:
    media_type: str
    width: int
    height: int


def read_header(data: bytes) -> ImageHeader:
    """The image's type and size, or ActionError('unsupported_file_type' / 'unreadable_file')."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        header = _png(data)
    elif data.startswith(b"\xff\xd8\xff"):
        header = _jpeg(data)
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        header = _gif(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        header = _webp(data)
    else:
        raise ActionError("unsupported_file_type", "This file is not a PNG, JPEG, GIF or WebP image, although its name says so.")
    if header is None or not (0 < header.width <= MAX_SIDE and 0 < header.height <= MAX_SIDE):
        raise ActionError("unreadable_file", "This image could not be read: its header is damaged.")
    return header


def _png(data: bytes) -> ImageHeader | None:
    if data[12:16] != b"IHDR" or len(data) < 24:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return ImageHeader("image/png", width, height)


def _gif(data: bytes) -> ImageHeader | None:
    if len(data) < 10:
        return None
    width, height = struct.unpack("<HH", data[6:10])
    return ImageHeader("image/gif", width, height)


def _jpeg(data: bytes) -> ImageHeader | None:
    """Walks the segments to the first frame header (SOFn), which holds the size."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _JPEG_FRAMES:
            if at + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return ImageHeader("image/jpeg", width, height)
        if marker == 0xD9 or length < 2:
            return None
        at += 2 + length
    return None


def _webp(data: bytes) -> ImageHeader | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return ImageHeader("image/webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return ImageHeader("image/webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        if len(data) < 30:
            return None
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return ImageHeader("image/webp", width, height)
    return None
