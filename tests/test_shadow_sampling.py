"""Which replies get a shadow: a stable hash of (config, message) against the share, only complete
replies of the config's model, sent to the worker by name with ids only once the final write commits;
nothing read from the database per reply while the configs are cached."""

import asyncio
import threading
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from chat import replies
from chat.catalogue import DEMO_NAME as DEMO
from chat.models import ChatModel, Conversation
from parley.celery import app
from shadows import sampling
from shadows.models import ShadowConfig
from tests.fakes import Scenario
from tests.fakes.openai_server import OpenAIFake
from tests.helpers import reply_events


@pytest.fixture
def published(monkeypatch) -> list[tuple[str, tuple]]:
    """What is sent to the broker (the network edge), recorded instead."""
    sent: list[tuple[str, tuple]] = []
    lock = threading.Lock()

    def send_task(name: str, args: tuple = (), **kwargs: object) -> None:
        with lock:
            sent.append((name, tuple(args)))

    monkeypatch.setattr(app, "send_task", send_task)
    return sent


def shadows_sent(published: list[tuple[str, tuple]]) -> list[tuple]:
    return [args for name, args in published if name == sampling.TASK]


def test_zero_percent_never_samples_and_a_hundred_always_does():
    ids = range(1, 5001)
    assert not any(sampling.is_sampled(message_id, 7, Decimal(0)) for message_id in ids)
    assert all(sampling.is_sampled(message_id, 7, Decimal(100)) for message_id in ids)


def test_a_share_samples_about_that_share_and_the_same_replies_every_time():
    ids = range(1, 20_001)
    ten = [message_id for message_id in ids if sampling.is_sampled(message_id, 3, Decimal(10))]
    assert 1800 < len(ten) < 2200
    assert ten == [message_id for message_id in ids if sampling.is_sampled(message_id, 3, Decimal(10))]
    # Raising the share only adds replies; another config draws its own sample.
    twenty = {message_id for message_id in ids if sampling.is_sampled(message_id, 3, Decimal(20))}
    assert set(ten) < twenty
    assert set(ten) != {message_id for message_id in ids if sampling.is_sampled(message_id, 4, Decimal(10))}
    half_percent = sum(sampling.is_sampled(message_id, 3, Decimal("0.5")) for message_id in ids)
    assert 50 < half_percent < 150


def test_a_config_must_differ_from_the_real_call_and_keep_its_share_in_range(db):
    real = ChatModel.objects.get(name=DEMO)
    other = ChatModel.objects.create(name="other", label="Other", provider="demo")
    with pytest.raises(ValidationError, match="must differ from the real call"):
        ShadowConfig(model=real, sample_percent=5).full_clean()
    with pytest.raises(ValidationError, match="must differ from the real call"):
        ShadowConfig(model=real, shadow_model=real, system_prompt="  ", sample_percent=5).full_clean()
    with pytest.raises(ValidationError, match="less than or equal to 100"):
        ShadowConfig(model=real, shadow_model=other, sample_percent=Decimal("100.5")).full_clean()
    ShadowConfig(model=real, shadow_model=other, sample_percent=Decimal("0.25")).full_clean()
    ShadowConfig(model=real, system_prompt="Be brief.", sample_percent=100).full_clean()


def test_a_sampled_complete_reply_asks_for_its_run_on_commit_with_ids_only(transactional_db, published):
    real = ChatModel.objects.get(name=DEMO)
    always = ShadowConfig.objects.create(model=real, system_prompt="Be brief.", sample_percent=100)
    ShadowConfig.objects.create(model=real, system_prompt="Never.", sample_percent=0)
    ShadowConfig.objects.create(model=real, system_prompt="Off.", sample_percent=100, enabled=False)
    with transaction.atomic():
        sampling.after_final_write(41, DEMO, "complete")
        sampling.after_final_write(42, DEMO, "failed")
        sampling.after_final_write(43, DEMO, "stopped")
        sampling.after_final_write(44, "another-model", "complete")
        assert shadows_sent(published) == []  # nothing before the commit
    assert shadows_sent(published) == [(41, always.pk)]
    with transaction.atomic():
        sampling.after_final_write(45, DEMO, "complete")
        transaction.set_rollback(True)
    assert shadows_sent(published) == [(41, always.pk)]  # a rolled-back final write asks for nothing


def test_without_enabled_configs_a_reply_reads_nothing_from_the_database(db, published):
    sampling.after_final_write(1, DEMO, "complete")  # reads the (empty) configs once
    with CaptureQueriesContext(connection) as queries:
        for message_id in range(2, 1002):
            sampling.after_final_write(message_id, DEMO, "complete")
    assert len(queries) == 0 and shadows_sent(published) == []


def test_a_saved_config_is_seen_at_the_next_reply_of_this_process(transactional_db, published):
    sampling.after_final_write(1, DEMO, "complete")
    config = ShadowConfig.objects.create(model=ChatModel.objects.get(name=DEMO), system_prompt="Hi.", sample_percent=100)
    sampling.after_final_write(2, DEMO, "complete")
    config.enabled = False
    config.save()
    sampling.after_final_write(3, DEMO, "complete")
    assert shadows_sent(published) == [(2, config.pk)]


def test_only_complete_replies_of_the_model_are_sent_from_the_final_write(transactional_db, alice, settings, published):
    async def scenario() -> tuple[int, int, int]:
        async with OpenAIFake(Scenario(tokens=3)) as fake:
            settings.OPENAI_API_KEY = "sk-test"
            settings.PROVIDER_MAX_RETRIES = 0
            good = await ChatModel.objects.acreate(name="fake-good", label="Good", provider="openai", base_url=fake.base_url)
            broken = await ChatModel.objects.acreate(
                name="fake-broken#scenario=server_error", label="Broken", provider="openai", base_url=fake.base_url
            )
            for model in (good, broken):
                await ShadowConfig.objects.acreate(model=model, system_prompt="Be brief.", sample_percent=100)
            ids = []
            for model in (good, broken):
                conversation = await Conversation.objects.acreate(owner=alice, model=model)
                event = await replies.send_message(alice, conversation.pk, "Hello")
                ids.append(event["assistant_message"]["id"])
                await reply_events(alice, ids[-1])
            config = await ShadowConfig.objects.aget(model=good)
            for _ in range(50):  # the publish runs on the deferred threads after the commit
                if shadows_sent(published):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            return ids[0], ids[1], config.pk

    good_reply, failed_reply, config_id = asyncio.run(scenario())
    assert shadows_sent(published) == [(good_reply, config_id)]
