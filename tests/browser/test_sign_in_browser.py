"""Sign-in protection as a person sees it: the log-in page after too many wrong passwords."""

import pytest

from tests.browser.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.live]


@pytest.fixture
def lena(django_user_model):
    return django_user_model.objects.create_user("locked-out-lena", password=PASSWORD)


def try_password(page, username: str, password: str) -> None:
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("form button[type=submit]")
    page.wait_for_load_state()


def test_too_many_wrong_passwords_show_a_plain_message_on_the_login_page(context, lena):
    page = context.new_page()
    page.goto("/accounts/login/")
    for _ in range(4):
        try_password(page, lena.username, "not-her-password")
        assert "correct username and password" in page.inner_text(".alert-error")
    try_password(page, lena.username, "not-her-password")
    message = page.inner_text(".alert-error[role=alert]")
    assert message == "Too many failed sign-ins for this account. Try again in 30 seconds."
    try_password(page, lena.username, PASSWORD)  # the right password while the lock lasts
    assert "/accounts/login/" in page.url
    assert page.inner_text(".alert-error").startswith("Too many failed sign-ins for this account. Try again in ")
    assert page.is_visible("#id_password"), "the form stays, for when the wait is over"
