"""Presets keep their versions: an edit of the text in admin adds one (nothing else does), the
preset's page lists them with their changes, and "Roll back to this version" puts an earlier text in
force again as a new version, for staff who may change presets only."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from chat.models import PromptPreset, PromptPresetVersion
from chat.presets import PresetError, create_preset, line_diff, revise, roll_back

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123456")


@pytest.fixture
def admin_client(root) -> Client:
    client = Client()
    client.force_login(root)
    return client


@pytest.fixture
def pirate(root) -> PromptPreset:
    return create_preset("Pirate", "Talk like a pirate.\nKeep it short.", by=root)


def form(preset: PromptPreset, text: str, note: str = "", **changes: object) -> dict[str, object]:
    return {"name": preset.name, "text": text, "note": note, "enabled": "on", "sort": preset.sort, **changes}


def numbers(preset: PromptPreset) -> list[tuple[int, str]]:
    return list(PromptPresetVersion.objects.filter(preset=preset).order_by("number").values_list("number", "text"))


def test_adding_a_preset_in_admin_makes_its_version_1(admin_client, root):
    response = admin_client.post(
        "/admin/chat/promptpreset/add/", {"name": "Brief", "text": "  Answer in one sentence.\n", "note": "", "enabled": "on", "sort": 1},
    )
    assert response.status_code == 302
    preset = PromptPreset.objects.get(name="Brief")
    version = preset.current_version
    assert (version.number, version.text, version.created_by, version.restored_from) == (1, "Answer in one sentence.", root, None)


def test_only_a_changed_text_makes_a_new_version(admin_client, pirate, root):
    url = f"/admin/chat/promptpreset/{pirate.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert "Talk like a pirate.\nKeep it short.</textarea>" in page  # the form shows the version in force
    # The name, the order and a note change; the text does not: no version.
    assert admin_client.post(url, form(pirate, "Talk like a pirate.\nKeep it short.", note="renamed", name="Pirates", sort=5)).status_code == 302
    assert numbers(pirate) == [(1, "Talk like a pirate.\nKeep it short.")]
    # The list's editable columns save without the text: no version either.
    changelist = {
        "form-TOTAL_FORMS": "1", "form-INITIAL_FORMS": "1", "form-0-id": pirate.pk, "form-0-enabled": "", "form-0-sort": "7",
        "_save": "Save",
    }
    assert admin_client.post("/admin/chat/promptpreset/", changelist).status_code == 302
    pirate.refresh_from_db()
    assert (pirate.name, pirate.sort, pirate.enabled) == ("Pirates", 7, False) and numbers(pirate) == [(1, "Talk like a pirate.\nKeep it short.")]

    assert admin_client.post(url, form(pirate, "Talk like a pirate.\nKeep it very short.", note="Shorter  replies")).status_code == 302
    pirate.refresh_from_db()
    current = pirate.current_version
    assert (current.number, current.text, current.note, current.created_by) == (2, "Talk like a pirate.\nKeep it very short.", "Shorter replies", root)
    assert numbers(pirate)[0] == (1, "Talk like a pirate.\nKeep it short.")  # the old text is kept as it was
    # An empty or over-long text is refused by the form, and makes nothing.
    for bad in ["   ", "x" * 20_001]:
        refused = admin_client.post(url, form(pirate, bad))
        assert refused.status_code == 200 and b"errorlist" in refused.content
    assert len(numbers(pirate)) == 2


def test_the_page_lists_versions_newest_first_with_their_changes(admin_client, pirate, root):
    revise(pirate, "Talk like a pirate.\nKeep it very short.", by=root, note="<b>shorter</b>")
    page = admin_client.get(f"/admin/chat/promptpreset/{pirate.pk}/change/").content.decode()
    versions = page[page.index('id="preset-versions"'):]
    assert versions.index('id="version-2"') < versions.index('id="version-1"')
    row2 = versions[versions.index('id="version-2"'):versions.index('id="version-1"')]
    assert "in force" in row2 and "root" in row2 and "&lt;b&gt;shorter&lt;/b&gt;" in row2 and "<b>shorter" not in row2
    assert '<span class="diff-remove">− Keep it short.</span>' in row2 and '<span class="diff-add">+ Keep it very short.</span>' in row2
    row1 = versions[versions.index('id="version-1"'):]
    assert 'name="version" value="1"' in row1 and "Roll back to this version" in row1
    assert 'name="version" value="2"' not in row2  # the version in force has no rollback


def test_rolling_back_adds_a_version_copying_the_earlier_one(admin_client, pirate, root):
    revise(pirate, "Talk like a robot.", by=root)
    response = admin_client.post(f"/admin/chat/promptpreset/{pirate.pk}/rollback/", {"version": "1"}, follow=True)
    assert response.status_code == 200
    assert "Version 1 is in force again, as version 3." in response.content.decode()
    pirate.refresh_from_db()
    current = pirate.current_version
    assert (current.number, current.text, current.created_by, current.restored_from.number) == (3, "Talk like a pirate.\nKeep it short.", root, 1)
    assert current.note == "Rolled back to version 1."
    assert numbers(pirate) == [(1, "Talk like a pirate.\nKeep it short."), (2, "Talk like a robot."), (3, "Talk like a pirate.\nKeep it short.")]
    history = admin_client.get(f"/admin/chat/promptpreset/{pirate.pk}/change/").content.decode()
    row3 = history[history.index('id="version-3"'):history.index('id="version-2"')]
    assert "Rolled back to version 1." in row3 and "root" in row3
    # Version 1's text is in force again: only version 2 is offered as a rollback.
    assert history.count("Roll back to this version") == 1 and 'name="version" value="2"' in history


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("", "Pick a version to roll back to by its number."),
        ("one", "Pick a version to roll back to by its number."),
        ("0", "Pick a version to roll back to by its number."),
        ("-1", "Pick a version to roll back to by its number."),
        ("9", "This preset has no version 9."),
        ("2", "Version 2 is already in force."),
    ],
)
def test_a_bad_rollback_is_refused_in_words_and_changes_nothing(admin_client, pirate, root, value, said):
    revise(pirate, "Talk like a robot.", by=root)
    response = admin_client.post(f"/admin/chat/promptpreset/{pirate.pk}/rollback/", {"version": value}, follow=True)
    assert response.status_code == 200 and said in response.content.decode()
    assert len(numbers(pirate)) == 2 and PromptPreset.objects.get(pk=pirate.pk).current_version.number == 2


def test_a_rollback_to_the_text_in_force_is_refused(pirate, root):
    revise(pirate, "Talk like a robot.", by=root)
    roll_back(pirate, 1, by=root)  # version 3 has version 1's text
    with pytest.raises(PresetError, match="Version 3, in force, already has the text of version 1."):
        roll_back(pirate, "1", by=root)


def test_a_rollback_of_another_or_no_preset_is_refused(admin_client, pirate, root):
    other = create_preset("Brief", "Answer in one sentence.", by=root)
    revise(other, "Answer in two sentences.", by=root)
    # Version 1 of the pirate is current; asking the pirate for version 2 names a version it lacks.
    response = admin_client.post(f"/admin/chat/promptpreset/{pirate.pk}/rollback/", {"version": "2"}, follow=True)
    assert "This preset has no version 2." in response.content.decode()
    gone = admin_client.post("/admin/chat/promptpreset/999999/rollback/", {"version": "1"}, follow=True)
    assert gone.status_code == 200 and "That preset does not exist" in gone.content.decode()
    assert len(numbers(pirate)) == 1 and len(numbers(other)) == 2


def test_rollback_is_a_post_for_staff_who_may_change_presets(django_user_model, pirate, root):
    revise(pirate, "Talk like a robot.", by=root)
    url = f"/admin/chat/promptpreset/{pirate.pk}/rollback/"
    anonymous = Client().post(url, {"version": "1"})
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]

    viewer = django_user_model.objects.create_user("vera", password="pw-vera-123456", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_promptpreset"))
    client = Client()
    client.force_login(viewer)
    page = client.get(f"/admin/chat/promptpreset/{pirate.pk}/change/").content.decode()
    assert 'id="preset-versions"' in page and "Roll back to this version" not in page
    assert client.post(url, {"version": "1"}).status_code == 403

    user = django_user_model.objects.create_user("ursula", password="pw-ursula-123456")  # not staff
    client.force_login(user)
    assert client.post(url, {"version": "1"}).status_code == 302

    boss = Client()
    boss.force_login(root)
    assert boss.get(url).status_code == 405
    csrf_checked = Client(enforce_csrf_checks=True)
    csrf_checked.force_login(root)
    assert csrf_checked.post(url, {"version": "1"}).status_code == 403
    assert PromptPreset.objects.get(pk=pirate.pk).current_version.number == 2 and len(numbers(pirate)) == 2


def test_the_diff_shows_changed_lines_with_a_line_of_context():
    before = "one\ntwo\nthree\nfour\nfive\nsix\nseven"
    after = "one\n2\nthree\nfour\nfive\nsix\n7"
    assert line_diff(before, after) == [
        ("same", "one"), ("remove", "two"), ("add", "2"), ("same", "three"),
        ("gap", "…"), ("same", "six"), ("remove", "seven"), ("add", "7"),
    ]
    assert line_diff("--x", "--y") == [("remove", "--x"), ("add", "--y")]
