"""A conversation's messages a page at a time: the newest page first, older pages by message id.
A branched conversation is paged along the branch shown (chat/branches.py), by the same ids.

Pages are cut by id (keyset), never by OFFSET: on the (conversation, id) index each page is one
short range read, so the last page of a 10,000-message conversation costs what the first does.
"""

from dataclasses import dataclass

from django.db.models import Prefetch, prefetch_related_objects
from django.http import QueryDict

from chat import branches
from chat.actions import MAX_PK, ActionError
from chat.models import Conversation, Message, Upload

PAGE_SIZE = 50  # what a conversation opens with, in the API and on the chat page
PAGE_SIZE_MAX = 200


@dataclass(frozen=True, slots=True)
class MessagePage:
    messages: list[Message]  # oldest first
    has_more: bool  # older messages exist

    @property
    def oldest_id(self) -> int | None:
        return self.messages[0].pk if self.messages else None


def message_page(conversation: Conversation, before: int | None = None, limit: int = PAGE_SIZE) -> MessagePage:
    """The `limit` newest messages of the branch shown older than message `before` (any id: it is
    only a bound), in one query; along a branch, the ancestors of `before` (chat/branches.py)."""
    # Their files come in one more query, without their bytes or text (a page without files: none).
    files = Prefetch("attachments", queryset=Upload.objects.defer("data", "text"))
    if branches.is_branched(conversation):
        page = MessagePage(*branches.page_before(conversation, before, limit))
        prefetch_related_objects(page.messages, files)
        return page
    messages = Message.objects.filter(conversation=conversation).order_by("-id").prefetch_related(files)
    if before is not None:
        messages = messages.filter(id__lt=before)
    newest_first = list(messages[: limit + 1])  # one more than the page: whether older ones exist
    page = newest_first[:limit]
    page.reverse()
    return MessagePage(page, has_more=len(newest_first) > limit)


def parse_query(query: QueryDict) -> tuple[int | None, int]:
    """`before` and `limit` of a page request, or ActionError('invalid_input'). Each may be given
    once, in ASCII digits: int() would also take " 12", "1_2" and other scripts' digits."""
    before = _number(query, "before", MAX_PK, "before must be a message id.")
    limit = _number(query, "limit", PAGE_SIZE_MAX, f"limit must be a whole number from 1 to {PAGE_SIZE_MAX}.")
    return before, PAGE_SIZE if limit is None else limit


def _number(query: QueryDict, name: str, highest: int, refusal: str) -> int | None:
    values = query.getlist(name)
    if not values:
        return None
    text = values[0]
    # The length is checked first: a long string of digits is refused without converting it.
    if len(values) > 1 or not (text.isascii() and text.isdigit() and len(text) <= 19) or not 0 < int(text) <= highest:
        raise ActionError("invalid_input", refusal)
    return int(text)
