"""The agent tool registry: arithmetic parsed and never evaluated, arguments checked against each
tool's schema, tools offered by permission, the built-in tools' work on the caller's own data."""

import pytest
from django.contrib.auth.models import Permission
from django.core import mail

from agents import registry, tools
from agents.calculator import CalculationError, as_text, calculate
from agents.models import AgentRun, Artifact
from agents.schema import InvalidArguments
from chat.models import ChatModel, Conversation, Message


@pytest.mark.parametrize(
    ("expression", "expected"),
    [("(12 + 30) * 2", "84"), ("0.1 + 0.2", "0.3"), ("2 ** 10", "1024"), ("2^8", "256"), ("7 / 2", "3.5"),
     ("-3 % 5", "2"), ("17 // 5", "3"), ("1e3 + 1", "1001")],
)
def test_arithmetic_is_computed_exactly(expression, expected):
    assert as_text(calculate(expression)) == expected


@pytest.mark.parametrize(
    ("expression", "why"),
    [('__import__("os").system("id")', "Only numbers"), ("open('x')", "Only numbers"), ("a + 1", "Only numbers"),
     ("(1).__class__", "Only numbers"), ("'x' * 3", "Only numbers"), ("True + 1", "Only numbers"), ("[1, 2]", "Only numbers"),
     ("9 ** 9 ** 9", "Exponents"), ("10 ** 999 * 10 ** 999", "too large"), ("1 / 0", "Division by zero"),
     ("(-8) ** 0.5", "not a real number"), ("1 +", "not an arithmetic"), ("", "Give an arithmetic"), ("1+" * 300 + "1", "longer than"),
     ("-(" * 50 + "1" + ")" * 50, "nested")],
)
def test_anything_but_arithmetic_is_refused_with_a_reason(expression, why):
    with pytest.raises(CalculationError, match=why):
        calculate(expression)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "why"),
    [(None, "JSON object"), ({}, "Missing argument"), ({"expression": 12}, "must be text"),
     ({"expression": "1", "extra": 1}, "Unknown argument"), ({"expression": "1" * 501}, "at most 500"),
     ({"expression": ""}, "at least 1")],
)
def test_arguments_that_do_not_fit_the_schema_are_refused_before_the_tool_runs(alice, arguments, why):
    with pytest.raises(InvalidArguments, match=why):
        registry.prepare(alice, "calculate", arguments)


@pytest.mark.django_db
def test_typed_bounds_and_formats_are_checked(alice, django_user_model):
    with pytest.raises(InvalidArguments, match="must be an integer"):
        registry.prepare(alice, "search_conversations", {"query": "bread", "limit": True})
    with pytest.raises(InvalidArguments, match="at most 20"):
        registry.prepare(alice, "search_conversations", {"query": "bread", "limit": 21})
    mailer = django_user_model.objects.create_user("mailer", password="mailer-password-123")
    mailer.user_permissions.add(Permission.objects.get(codename="use_email_tool"))
    mailer = django_user_model.objects.get(pk=mailer.pk)  # permissions are cached per instance
    with pytest.raises(InvalidArguments, match="e-mail address"):
        registry.prepare(mailer, "send_email", {"to": "not an address", "subject": "Hi", "body": "Hello"})
    tool, arguments = registry.prepare(mailer, "send_email", {"to": "a@example.com", "subject": "Hi", "body": "Hello"})
    assert tool.risk == "high" and tool.side_effects and arguments["to"] == "a@example.com"


@pytest.mark.django_db
def test_only_the_tools_a_user_may_use_are_offered_and_others_are_refused(alice, django_user_model):
    assert [tool.name for tool in registry.offered_to(alice)] == [
        "calculate", "search_conversations", "list_files", "read_file", "write_report",
    ]
    with pytest.raises(tools.ToolRefused, match="may not use the send_email tool"):
        registry.prepare(alice, "send_email", {"to": "a@example.com", "subject": "Hi", "body": "Hello"})
    with pytest.raises(tools.ToolRefused, match="no tool named"):
        registry.prepare(alice, "rm_rf", {})
    with pytest.raises(tools.ToolRefused):
        registry.prepare(alice, ["calculate"], {})
    alice.user_permissions.add(Permission.objects.get(codename="use_email_tool"))
    alice = django_user_model.objects.get(pk=alice.pk)
    assert "send_email" in [tool.name for tool in registry.offered_to(alice)]
    alice.is_active = False
    assert registry.offered_to(alice) == []


def test_every_tool_declares_an_object_schema_the_providers_can_take():
    for tool in registry.REGISTRY.values():
        spec = tool.as_spec()
        assert set(spec) == {"name", "description", "parameters"} and spec["parameters"]["type"] == "object"
        assert set(spec["parameters"]["required"]) <= set(spec["parameters"]["properties"])
        assert spec["parameters"]["additionalProperties"] is False and tool.timeout_seconds > 0


@pytest.fixture
def alice_run(alice, bob):
    model = ChatModel.objects.get(name="parley-demo")
    mine = Conversation.objects.create(owner=alice, model=model, title="Baking")
    Message.objects.create(conversation=mine, role="user", content="How long should sourdough bread proof?")
    theirs = Conversation.objects.create(owner=bob, model=model, title="Bob's secrets")
    Message.objects.create(conversation=theirs, role="user", content="My sourdough bread recipe is secret")
    return AgentRun.objects.create(owner=alice, conversation=mine, goal="Summarize my baking", model="parley-demo")


def call(run: AgentRun) -> tools.ToolContext:
    return tools.ToolContext(user=run.owner, run_id=run.pk, step_id=1, conversation_id=run.conversation_id)


@pytest.mark.django_db
def test_search_finds_only_the_callers_own_messages(alice_run):
    tool, arguments = registry.prepare(alice_run.owner, "search_conversations", {"query": "sourdough BREAD"})
    result = tool.run(call(alice_run), arguments)
    assert [match["conversation"] for match in result["matches"]] == ["Baking"]
    assert "secret" not in str(result)


@pytest.mark.django_db
def test_a_report_is_stored_once_under_a_safe_name_for_its_run(alice_run):
    tool, arguments = registry.prepare(alice_run.owner, "write_report", {"title": "../../Baking: a report!", "markdown": "# Bread"})
    assert tool.run(call(alice_run), arguments) == {"artifact": "baking-a-report.md", "size": 7}
    tool.run(call(alice_run), {**arguments, "markdown": "# Bread, again"})  # a redelivered step replaces, never adds
    assert list(Artifact.objects.filter(run=alice_run).values_list("name", "content")) == [("baking-a-report.md", "# Bread, again")]


@pytest.mark.django_db
def test_the_email_tool_sends_through_the_configured_backend(alice_run, settings):
    settings.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
    tool = registry.REGISTRY["send_email"]
    result = tool.run(call(alice_run), {"to": "friend@example.com", "subject": "Bread", "body": "Proof it overnight."})
    assert result == {"sent": True, "to": "friend@example.com"}
    assert [(m.to, m.subject) for m in mail.outbox] == [(["friend@example.com"], "Bread")]
