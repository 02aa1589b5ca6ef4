"""The user's HTTP door to feedback: rate a reply, change the rating or take it back."""

from typing import Any

from django.http import HttpRequest, HttpResponse

from chat.actions import ActionError
from chat.responses import api_view, json_response, read_json
from support import feedback


@api_view({"POST"})
def message_feedback(request: HttpRequest, user: Any, pk: int) -> HttpResponse:
    """`{"rating": "up" | "down" | null, "comment": "..."}`: null takes the rating back; without
    `comment` a changed rating keeps its comment. Answers `{"feedback": {...} | null}`."""
    data = read_json(request)
    unknown = set(data) - {"rating", "comment"}
    if unknown:
        raise ActionError("invalid_input", f"Unknown fields: {', '.join(sorted(unknown))}.")
    if "rating" not in data:
        raise ActionError("invalid_input", 'rating is required: "up", "down" or null.')
    rating = feedback.parse_rating(data["rating"])
    comment = feedback.clean_comment(data["comment"]) if "comment" in data else None
    return json_response({"feedback": feedback.as_dict(feedback.rate(user, pk, rating, comment))})
