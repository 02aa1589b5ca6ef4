"""The ledger and cost alerts, moved from the chat app with their tables."""

import django.db.models.deletion
import django.utils.timezone
from decimal import Decimal
from django.conf import settings
from django.db import migrations, models


MOVED = ("usagerecord", "costalert")


def move_content_types(apps, schema_editor):
    """Keep permissions given on the ledger and admin history: they point at these content types."""
    _relabel(apps, "chat", "billing")


def move_content_types_back(apps, schema_editor):
    _relabel(apps, "billing", "chat")


def _relabel(apps, old: str, new: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in MOVED:
        if not ContentType.objects.filter(app_label=new, model=model).exists():
            ContentType.objects.filter(app_label=old, model=model).update(app_label=new)


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('chat', '0008_message_conversation_index'),
        ('contenttypes', '0002_remove_content_type_name'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # The tables stay where they are (chat_usagerecord, chat_costalert): only Django's idea of
        # which app owns them changes, so nothing is copied and nothing is locked.
        migrations.SeparateDatabaseAndState(state_operations=[
                migrations.CreateModel(
                    name='CostAlert',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('key', models.CharField(max_length=80, unique=True)),
                        ('scope', models.CharField(choices=[('user', 'User'), ('site', 'Site')], max_length=4)),
                        ('period', models.CharField(help_text='The month, as YYYYMM (UTC).', max_length=6)),
                        ('threshold', models.PositiveSmallIntegerField(help_text='Percent of the monthly budget.')),
                        ('spent_usd', models.DecimalField(decimal_places=8, max_digits=14)),
                        ('budget_usd', models.DecimalField(decimal_places=2, max_digits=12)),
                        ('recipients', models.TextField(blank=True)),
                        ('created', models.DateTimeField(default=django.utils.timezone.now)),
                        ('user', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'chat_costalert',
                        'ordering': ['-created', '-id'],
                    },
                ),
                migrations.CreateModel(
                    name='UsageRecord',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('kind', models.CharField(choices=[('reply', 'Reply'), ('title', 'Title')], max_length=10)),
                        ('provider', models.CharField(max_length=20)),
                        ('model', models.CharField(max_length=100)),
                        ('prompt_tokens', models.PositiveIntegerField(default=0)),
                        ('completion_tokens', models.PositiveIntegerField(default=0)),
                        ('estimated', models.BooleanField(default=False, help_text='The provider reported no usage (a stopped or failed call): counted from the text.')),
                        ('cost_usd', models.DecimalField(decimal_places=8, default=Decimal('0'), max_digits=14)),
                        ('duration_ms', models.PositiveIntegerField(blank=True, null=True)),
                        ('outcome', models.CharField(help_text='complete, stopped, failed or interrupted', max_length=12)),
                        ('error_code', models.CharField(blank=True, help_text='Why a failed call failed, e.g. overloaded.', max_length=40)),
                        ('over_reservation_tokens', models.PositiveIntegerField(default=0, help_text='Output tokens the provider reported beyond the most the call reserved (it ignored max_tokens).')),
                        ('overspend_alerted', models.BooleanField(default=False, help_text='The admins were emailed about the overspend.')),
                        ('created', models.DateTimeField(default=django.utils.timezone.now)),
                        ('conversation', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='chat.conversation')),
                        ('message', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='chat.message')),
                        ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='usage', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'chat_usagerecord',
                        'ordering': ['-created', '-id'],
                        'indexes': [models.Index(fields=['user', 'created'], name='chat_usager_user_id_6a78e6_idx'), models.Index(fields=['created'], name='chat_usager_created_bb4d87_idx')],
                    },
                ),
        ]),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
