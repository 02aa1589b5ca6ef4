"""A conversation's messages as a tree: editing a message or regenerating a reply adds a sibling
(a message with the same parent), and the conversation shows one branch, the path from its first
message to `Conversation.current_leaf`.

A conversation that has never branched keeps `current_leaf` empty and its messages in id order
are its one branch: the messages of older conversations (and of scripts that wrote them) have no
parents, and reading them this way needs no migration of their rows. The first edit or
regenerate gives them their parents (`make_branched`), and from then on the parent chain is the truth.

Paths are read with one recursive query up the parent chain (SQLite and PostgreSQL both have
WITH RECURSIVE), bounded by the rows wanted, so a page of a 10,000-message branch reads a page of rows.
Along a path ids only grow: a child is always written after its parent.
"""

from collections.abc import Iterable

from django.db import connection

from chat.actions import ActionError
from chat.models import Conversation, Message

TABLE = Message._meta.db_table
Row = tuple[int, str, str, str]  # id, role, content, status

# Up the parent chain from a message of the conversation, at most %s rows (the depth bound).
_PATH = f"""
WITH RECURSIVE path(id, depth) AS (
    SELECT id, 0 FROM {TABLE} WHERE id = %s AND conversation_id = %s
    UNION ALL
    SELECT m.parent_id, path.depth + 1 FROM {TABLE} m JOIN path ON m.id = path.id
    WHERE m.parent_id IS NOT NULL AND path.depth + 1 < %s
)
"""


def is_branched(conversation: Conversation) -> bool:
    return conversation.current_leaf_id is not None


def path_rows(conversation_id: int, leaf_id: int | None, limit: int | None = None) -> list[Row]:
    """(id, role, content, status) of the path ending at `leaf_id`, oldest first; with `limit`,
    only its `limit` newest messages. What a reply's history is read from."""
    if leaf_id is None:
        return []
    sql = _PATH + f"SELECT m.id, m.role, m.content, m.status FROM {TABLE} m JOIN path ON m.id = path.id ORDER BY m.id"
    with connection.cursor() as cursor:
        cursor.execute(sql, [leaf_id, conversation_id, limit or 2**31])
        return [tuple(row) for row in cursor.fetchall()]  # type: ignore[misc]


def path_to(message: Message, limit: int | None = None) -> list[Message]:
    """The messages from the first one to `message`, oldest first (its `limit` newest with a limit)."""
    sql = _PATH + f"SELECT m.* FROM {TABLE} m JOIN path ON m.id = path.id ORDER BY m.id"
    return list(Message.objects.raw(sql, [message.pk, message.conversation_id, limit or 2**31]))


def branch_messages(conversation: Conversation) -> list[Message]:
    """The branch the conversation shows, oldest first: what its page, its share link and its
    export show, and what its next reply is sent."""
    if not is_branched(conversation):
        return list(Message.objects.filter(conversation=conversation).order_by("id"))
    leaf = Message(pk=conversation.current_leaf_id, conversation_id=conversation.pk)
    return path_to(leaf)


def newest_of_branch(conversation: Conversation, count: int) -> list[Message]:
    """The `count` newest messages of the branch shown, oldest first, reading only those."""
    if not is_branched(conversation):
        return list(reversed(Message.objects.filter(conversation=conversation).order_by("-id")[:count]))
    return path_to(Message(pk=conversation.current_leaf_id, conversation_id=conversation.pk), count)


def page_before(conversation: Conversation, before: int | None, limit: int) -> tuple[list[Message], bool]:
    """The `limit` newest messages of the branch shown that come before message `before` (oldest
    first), and whether older ones exist. `before` is usually the oldest message of the page
    shown, on the branch: its ancestors are the page before. Any other id is only a bound."""
    start: int | None = conversation.current_leaf_id
    bound = None
    if before is not None:
        found = list(Message.objects.filter(pk=before, conversation=conversation).values_list("parent_id", flat=True))
        if found:
            start = found[0]
        else:
            bound = before
    if start is None:
        return [], False
    anchor = Message(pk=start, conversation_id=conversation.pk)
    if bound is None:
        newest = path_to(anchor, limit + 1)
    else:
        newest = [message for message in path_to(anchor) if message.pk < bound][-(limit + 1) :]
    return newest[-limit:] if len(newest) > limit else newest, len(newest) > limit


def siblings_of(conversation: Conversation, messages: Iterable[Message]) -> dict[int, list[int]]:
    """Each message's siblings (ids, oldest first, itself among them), in one query for a page.
    A conversation that never branched has none but the messages themselves."""
    messages = list(messages)
    if not is_branched(conversation) or not messages:
        return {message.pk: [message.pk] for message in messages}
    parents = {message.parent_id for message in messages}
    # By parent alone, on its index: a parent's children are in its conversation.
    rows = list(Message.objects.filter(parent_id__in=parents - {None}).order_by("id").values_list("parent_id", "id"))
    if None in parents:  # the first message and its edits (on the oldest page only)
        rows += [(None, pk) for pk in sibling_ids(conversation.pk, None)]
    by_parent: dict[int | None, list[int]] = {}
    for parent_id, pk in rows:
        by_parent.setdefault(parent_id, []).append(pk)
    return {message.pk: by_parent.get(message.parent_id, [message.pk]) for message in messages}


def sibling_ids(conversation_id: int, parent_id: int | None) -> list[int]:
    """The ids of the children of `parent_id` (of the first messages, for None), oldest first."""
    if parent_id is None:
        query = Message.objects.filter(conversation_id=conversation_id, parent__isnull=True)
    else:
        query = Message.objects.filter(parent_id=parent_id)  # on the parent's index
    return list(query.order_by("id").values_list("id", flat=True))


def make_branched(conversation: Conversation) -> None:
    """Before its first branch, give every message but the first its parent, the message before it,
    as its one branch showed them; in the caller's transaction. Messages sent here have theirs already."""
    if is_branched(conversation):
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET parent_id = (SELECT MAX(p.id) FROM {TABLE} p WHERE p.conversation_id = %s AND p.id < {TABLE}.id)"
            f" WHERE conversation_id = %s AND parent_id IS NULL"
            f" AND id > (SELECT MIN(f.id) FROM {TABLE} f WHERE f.conversation_id = %s)",
            [conversation.pk, conversation.pk, conversation.pk],
        )


def leaf_under(message: Message) -> int:
    """The leaf to show when the user picks `message`: down its newest child, then that one's, to the end."""
    sql = f"""
WITH RECURSIVE down(id) AS (
    SELECT id FROM {TABLE} WHERE id = %s
    UNION ALL
    SELECT (SELECT MAX(c.id) FROM {TABLE} c WHERE c.parent_id = down.id) FROM down WHERE down.id IS NOT NULL
)
SELECT MAX(id) FROM down"""
    with connection.cursor() as cursor:
        cursor.execute(sql, [message.pk])
        return int(cursor.fetchone()[0])


def set_leaf(conversation: Conversation, leaf_id: int) -> None:
    """Show the branch that ends at `leaf_id` (stored: a reload and other tabs show it too)."""
    make_branched(conversation)
    conversation.current_leaf_id = leaf_id
    Conversation.objects.filter(pk=conversation.pk).update(current_leaf_id=leaf_id)


def show(conversation: Conversation, message: Message) -> None:
    """Show the branch through `message`, one of the conversation's: its newest continuation."""
    if message.conversation_id != conversation.pk:
        raise ActionError("not_found")
    make_branched(conversation)
    set_leaf(conversation, leaf_under(message))
