"""Files on a user's message: which ones a send may carry, and what the model is sent of them.

A send names uploads of its conversation (chat/uploads.py) by id; a file may go with several
messages. Each turn that carries files is sent with them: a text file's text inside the turn,
delimited by its name (providers.base.user_text), and an image in the API's own shape, to a model
that reads images (`ChatModel.supports_vision`); any other model refuses the send. Later sends
repeat the text files of earlier turns, so the model keeps reading them; the images of earlier
turns are not sent again (each would cost up to ~1,600 tokens on every later turn): the turn says
in one line which image was there.

Everything here runs inside the send's transaction, on the database thread.
"""

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from django.conf import settings

from chat.actions import ActionError
from chat.history import Turn
from chat.models import ChatModel, Message, Upload
from parley import statements
from providers.base import Attachment, Image, TextFile

MAX_ID = 2**63 - 1


def parse_ids(value: object) -> tuple[int, ...]:
    """The upload ids a send names (`attachments`, a list; missing or null: none), each once, in order."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ActionError("invalid_input", "attachments must be a list of file ids.")
    if any(isinstance(item, bool) or not isinstance(item, int) or not 0 < item <= MAX_ID for item in value):
        raise ActionError("invalid_input", "attachments must be a list of file ids (whole numbers).")
    ids = tuple(dict.fromkeys(value))
    if len(ids) > settings.PARLEY_ATTACHMENTS_PER_MESSAGE:
        raise ActionError(
            "invalid_input", f"A message may carry at most {settings.PARLEY_ATTACHMENTS_PER_MESSAGE} files; it has {len(ids)}."
        )
    return ids


def resolve(conversation_id: int, ids: Sequence[int]) -> list[Upload]:
    """The files of the (owner-checked) conversation with these ids, in the order asked, with their
    bytes and text. An id that is not a file of this conversation (another's, another user's, or
    none) is refused alike: nothing tells them apart."""
    if not ids:
        return []
    found = {upload.pk: upload for upload in Upload.objects.filter(conversation_id=conversation_id, pk__in=ids)}
    missing = [str(pk) for pk in ids if pk not in found]
    if missing:
        raise ActionError(
            "not_found", f"Not a file of this conversation: {', '.join(missing)}. Attach the file to it first, then send."
        )
    return [found[pk] for pk in ids]


def turns(conversation_id: int | None, earlier: Sequence[tuple[Any, ...]], text: str, files: Sequence[Upload]) -> list[Turn]:
    """The turns the model is asked with: the earlier messages (`(id, role, content, status)` rows)
    with their text files, and the new user turn with all of its files."""
    earlier_files = _earlier_files(conversation_id) if earlier else {}
    out: list[Turn] = []
    for message_id, role, content, _ in earlier:
        parts = earlier_files.get(message_id)
        out.append((role, content, parts) if parts else (role, content))
    out.append((Message.Role.USER, text, tuple(map(part, files))) if files else (Message.Role.USER, text))
    return out


def part(upload: Upload) -> Attachment:
    if upload.is_image:
        return Image(upload.name, upload.content_type, bytes(upload.data), upload.width or 0, upload.height or 0)
    return TextFile(upload.name, upload.text)


def check_model(model: ChatModel, files: Sequence[Upload]) -> None:
    """Refuses images for a model that cannot read them (the model that answers: maybe the plan's fallback)."""
    if model.supports_vision:
        return
    images = [upload.name for upload in files if upload.is_image]
    if images:
        raise ActionError(
            "model_cannot_see_images",
            f"{model.label} can't read images; pick a model that can, or remove the image ({', '.join(images)}).",
        )


def link(message: Message, files: Sequence[Upload]) -> None:
    """Attaches the files to the stored user message, and keeps them on it, so that its `as_dict`
    needs no query (as `prefetch_related` would leave them)."""
    if files:
        Message.attachments.through.objects.bulk_create(
            [Message.attachments.through(message_id=message.pk, upload_id=upload.pk) for upload in files]
        )
    listed = Upload.objects.none()
    listed._result_cache = list(files)  # what prefetch_related stores, filled without a query
    listed._prefetch_done = True
    message._prefetched_objects_cache = {"attachments": listed}


def _earlier_files(conversation_id: int | None) -> dict[int, tuple[Attachment, ...]]:
    """The files of the conversation's earlier messages: text files as they are, images as a line
    of text. One indexed read of the conversation's file ids, and only if it has any, the rest."""
    if conversation_id is None or not statements.values_by(Upload, ("id",), "conversation", conversation_id):
        return {}
    rows = Message.attachments.through.objects.filter(upload__conversation_id=conversation_id).values_list(
        "message_id", "upload__name", "upload__content_type", "upload__text", "upload__width", "upload__height"
    ).order_by("id")
    found: dict[int, list[Attachment]] = defaultdict(list)
    for message_id, name, content_type, text, width, height in rows:
        if content_type in Upload.IMAGES:
            found[message_id].append(TextFile(name, f"(An image, {width}×{height} pixels, shown with this message; not sent again.)"))
        else:
            found[message_id].append(TextFile(name, text))
    return {message_id: tuple(parts) for message_id, parts in found.items()}
