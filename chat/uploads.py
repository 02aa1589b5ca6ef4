"""Files a user attaches to a conversation: checked, their text extracted once, kept with it.

Text, Markdown, CSV, PDF and images (PNG, JPEG, GIF, WebP). The name's extension says which, and
the bytes must agree: a PDF starts with `%PDF-`, a text file is UTF-8 (a byte-order mark allowed)
without NUL bytes, an image's header names its format (chat/images.py), which is the type it is
kept with, and its size in pixels. The text is extracted at upload, so its readers (the agents' `read_file` tool, and any other) read
stored text and never parse a file. Every lookup goes through the conversation's owner, never
through an id alone.

Reading a file is CPU work without the database (`inspect_file`) and storing it is database work
(`check_room`, `save_upload`): the upload view runs them on different threads. `store_upload`
does all three for code that may block.
"""

import dataclasses
import io
import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.db.models.functions import Substr

from accounts.models import User
from chat import images
from chat.actions import ActionError, get_conversation_for, parse_pk
from chat.models import Conversation, Upload
from providers.base import TextFile, image_tokens

logger = logging.getLogger(__name__)

TYPES = {
    "txt": Upload.TEXT, "md": Upload.MARKDOWN, "markdown": Upload.MARKDOWN, "csv": Upload.CSV, "pdf": Upload.PDF,
    "png": Upload.PNG, "jpg": Upload.JPEG, "jpeg": Upload.JPEG, "gif": Upload.GIF, "webp": Upload.WEBP,
}
NAME_MAX = 200
READ_MAX_CHARS = 20_000
# Characters Windows refuses in a file name: a downloaded file keeps its name on every system.
_UNSAFE_IN_NAMES = re.compile(r'[<>:"|?*]')


@dataclass(frozen=True, slots=True)
class FileContents:
    """A file that passed every check, with its text; not stored yet."""

    name: str
    content_type: str
    data: bytes
    text: str
    text_truncated: bool
    width: int | None = None
    height: int | None = None

    @property
    def tokens(self) -> int:
        """What the file adds to a prompt it is attached to: its delimited text, or the image."""
        if self.width is not None and self.height is not None:
            return image_tokens(self.width, self.height)
        return TextFile(self.name, self.text).tokens


def store_upload(user: User, conversation_id: object, name: object, data: bytes) -> Upload:
    """Checks, reads and stores a file in the user's conversation, or raises ActionError."""
    check_room(user, conversation_id)
    return save_upload(user, conversation_id, inspect_file(name, data))


def check_room(user: User, conversation_id: object) -> None:
    """Refuses early, before a file is read, what `save_upload` would refuse anyway."""
    conversation = get_conversation_for(user, conversation_id)
    if conversation.uploads.count() >= settings.PARLEY_UPLOADS_PER_CONVERSATION:
        raise _too_many()


def inspect_file(name: object, data: bytes) -> FileContents:
    """The file's safe name, its type and its text; no database. Raises ActionError."""
    clean = clean_name(name)
    content_type = type_for(clean)
    if content_type in Upload.IMAGES:
        return _image(clean, data)
    if len(data) > settings.PARLEY_UPLOAD_MAX_BYTES:
        raise too_large()
    if not data:
        raise ActionError("invalid_input", "The file is empty.")
    limit = settings.PARLEY_UPLOAD_MAX_TEXT_CHARS
    text = _pdf_text(data, limit) if content_type == Upload.PDF else _plain_text(data)
    return FileContents(clean, content_type, data, text[:limit], len(text) > limit)


def _image(name: str, data: bytes) -> FileContents:
    if len(data) > min(settings.PARLEY_IMAGE_MAX_BYTES, settings.PARLEY_UPLOAD_MAX_BYTES):
        raise too_large(image=True)
    if not data:
        raise ActionError("invalid_input", "The file is empty.")
    header = images.read_header(data)
    return FileContents(name, header.media_type, data, "", False, header.width, header.height)


def save_upload(user: User, conversation_id: object, contents: FileContents) -> Upload:
    """Stores checked contents in the user's conversation under a name no other file there has."""
    with transaction.atomic():
        # Locked, so that two uploads at once can neither pass the limit nor take the same name.
        conversation = Conversation.objects.select_for_update().filter(pk=parse_pk(conversation_id), owner=user).first()
        if conversation is None:
            raise ActionError("not_found")
        taken = set(conversation.uploads.values_list("name", flat=True))
        if len(taken) >= settings.PARLEY_UPLOADS_PER_CONVERSATION:
            raise _too_many()
        # The tokens are counted for the name it is stored under: a text file's name is part of its prompt.
        contents = dataclasses.replace(contents, name=_free_name(contents.name, taken))
        return Upload.objects.create(
            conversation=conversation,
            owner=user,
            name=contents.name,
            content_type=contents.content_type,
            size=len(contents.data),
            data=contents.data,
            text=contents.text,
            chars=len(contents.text),
            text_truncated=contents.text_truncated,
            width=contents.width,
            height=contents.height,
            tokens=contents.tokens,
        )


def uploads_for(user: User, conversation_id: object) -> QuerySet[Upload]:
    """The files of the user's conversation, oldest first, without their bytes or text."""
    return get_conversation_for(user, conversation_id).uploads.defer("data", "text")


def unsent_for(user: User, conversation_id: object) -> QuerySet[Upload]:
    """The files of the user's conversation that no message carries yet: the next message's."""
    return uploads_for(user, conversation_id).filter(messages__isnull=True)


def get_upload_for(user: User, upload_id: object) -> Upload:
    """One of the user's files with its bytes (for a download), or ActionError('not_found')."""
    upload = Upload.objects.filter(pk=parse_pk(upload_id), conversation__owner=user).defer("text").first()
    if upload is None:
        raise ActionError("not_found")
    return upload


def delete_upload(user: User, upload_id: object) -> None:
    deleted, _ = Upload.objects.filter(pk=parse_pk(upload_id), conversation__owner=user).delete()
    if not deleted:
        raise ActionError("not_found")


def read_upload_text(
    user: User, conversation_id: object, name_or_id: str | int, offset: int = 0, max_chars: int = READ_MAX_CHARS
) -> dict[str, Any]:
    """Up to `max_chars` characters of a file's text from `offset`, the file named by its name (as
    listed; letter case aside when that is unambiguous) or its id. `truncated`: more text follows.

    A conversation that is not the user's reads as one without files: nothing in the answer tells
    them apart. The words of a refusal are meant for the reader (a person or a model) to act on."""
    if offset < 0 or not 0 < max_chars <= READ_MAX_CHARS:
        raise ActionError("invalid_input", f"offset must be 0 or more, and max_chars 1 to {READ_MAX_CHARS:,}.")
    files = Upload.objects.filter(conversation_id=_conversation_pk(conversation_id), conversation__owner=user)
    upload = _find(files.only("name", "content_type", "chars"), name_or_id)
    if upload.is_image:
        raise ActionError("invalid_input", f"{upload.name} is an image: it has no text to read.")
    if offset > upload.chars:
        raise ActionError("invalid_input", f"offset {offset} is past the end of {upload.name} ({upload.chars} characters).")
    # Only the window leaves the database: a file's text may be a million characters.
    text = files.filter(pk=upload.pk).annotate(window=Substr("text", offset + 1, max_chars)).values_list("window", flat=True).get()
    return {
        "name": upload.name,
        "content_type": upload.content_type,
        "total_chars": upload.chars,
        "offset": offset,
        "text": text,
        "truncated": offset + len(text) < upload.chars,
    }


def _conversation_pk(conversation_id: object) -> int:
    try:
        return parse_pk(conversation_id)
    except ActionError:
        return 0  # no conversation has it: its files are none


def _find(files: QuerySet[Upload], name_or_id: str | int) -> Upload:
    if isinstance(name_or_id, int) and not isinstance(name_or_id, bool):
        found = files.filter(pk=name_or_id).first() if 0 < name_or_id <= 2**63 - 1 else None
    else:
        wanted = str(name_or_id).strip()
        found = files.filter(name=wanted).first()
        if found is None:
            folded = [upload for upload in files if upload.name.casefold() == wanted.casefold()]
            found = folded[0] if len(folded) == 1 else None
    if found is None:
        names = [upload.name for upload in files]
        attached = f" Attached: {', '.join(names)}." if names else " No files are attached to it."
        raise ActionError("not_found", f"No file named {str(name_or_id)[:NAME_MAX]!r} is attached to this conversation.{attached}")
    return found


# Names and types -----------------------------------------------------------------------------------


def clean_name(name: object) -> str:
    """The last part of a path, without control or formatting characters (a right-to-left mark
    could make "txt.exe" read as "exe.txt"), characters some systems refuse, or leading dots."""
    if not isinstance(name, str):
        raise ActionError("invalid_input", "The file needs a name.")
    name = " ".join(re.split(r"[/\\]", unicodedata.normalize("NFC", name))[-1].split())  # tabs, newlines: one space
    name = "".join(char for char in name if not unicodedata.category(char).startswith("C"))
    name = " ".join(_UNSAFE_IN_NAMES.sub("_", name).split()).strip(" .")
    if not name:
        raise ActionError("invalid_input", "The file needs a name.")
    return _shortened(name, NAME_MAX)


def type_for(name: str) -> str:
    """The content type its extension stands for; the bytes are checked against it later."""
    stem, dot, extension = name.rpartition(".")
    content_type = TYPES.get(extension.lower()) if dot and stem else None
    if content_type is None:
        raise ActionError(
            "unsupported_file_type",
            "Only text (.txt), Markdown (.md), CSV (.csv), PDF (.pdf) and image (.png, .jpg, .gif, .webp) files can be attached.",
        )
    return content_type


def _shortened(name: str, limit: int) -> str:
    """At most `limit` characters, the extension kept."""
    if len(name) <= limit:
        return name
    stem, _, extension = name.rpartition(".")
    return f"{stem[: limit - len(extension) - 1].rstrip()}.{extension}"


def _free_name(name: str, taken: set[str]) -> str:
    """The name, or "name (2).ext", "name (3).ext", ...: the tools find a file by its name."""
    stem, _, extension = name.rpartition(".")
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        suffix = f" ({number}).{extension}"
        candidate = f"{stem[: NAME_MAX - len(suffix)]}{suffix}"
    return candidate


def too_large(image: bool = False) -> ActionError:
    limit = settings.PARLEY_UPLOAD_MAX_BYTES
    if image and settings.PARLEY_IMAGE_MAX_BYTES < limit:
        limit = settings.PARLEY_IMAGE_MAX_BYTES
        return ActionError("file_too_large", f"The image is larger than {_size_text(limit)}, the most an image may have.")
    return ActionError("file_too_large", f"The file is larger than {_size_text(limit)}, the most a file may have.")


def _too_many() -> ActionError:
    limit = settings.PARLEY_UPLOADS_PER_CONVERSATION
    return ActionError("too_many_uploads", f"This conversation already has {limit} files, the most it may have. Remove one first.")


def _size_text(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):g} MiB"
    return f"{size / 1024:g} KiB" if size >= 1024 else f"{size} bytes"


# Text ------------------------------------------------------------------------------------------------


def _plain_text(data: bytes) -> str:
    if b"\x00" in data:
        raise ActionError("unsupported_file_type", "This file is not text: it has NUL bytes. Attach text, Markdown, CSV or PDF.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ActionError("unsupported_file_type", "This file is not UTF-8 text. Save it as UTF-8 and attach it again.") from None
    if not text.strip():
        raise ActionError("invalid_input", "The file has no text.")
    return text.replace("\r\n", "\n")


def _pdf_text(data: bytes, limit: int) -> str:
    """The text of every page, until there is more than `limit` characters of it."""
    if not data.startswith(b"%PDF-"):
        raise ActionError("unsupported_file_type", "This file is not a PDF, although its name says so.")
    from pypdf import PdfReader  # only an upload of a PDF needs it

    pages: list[str] = []
    chars = 0
    try:
        reader = PdfReader(io.BytesIO(data))
        # Many PDFs are encrypted with an empty password, only to restrict printing or copying.
        if reader.is_encrypted and not reader.decrypt(""):
            raise ActionError("unreadable_file", "This PDF could not be read: it is protected by a password.")
        for page in reader.pages:
            pages.append(page.extract_text() or "")
            chars += len(pages[-1])
            if chars > limit:
                break
    except ActionError:
        raise
    except Exception as error:  # pypdf raises many types on a broken file (PdfReadError, KeyError, ValueError, ...)
        logger.info("A PDF could not be read: %r", error)
        raise ActionError("unreadable_file", f"This PDF could not be read: {_reason(error)}") from None
    text = "\n\n".join(pages).strip()
    if not text:
        raise ActionError("unreadable_file", "This PDF could not be read: it has no text (a scanned page is a picture).")
    return text


def _reason(error: Exception) -> str:
    words = " ".join(str(error).split())[:200]
    return f"{words.rstrip('.')}." if words else "it is damaged."
