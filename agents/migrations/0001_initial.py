"""Agent runs, their steps and artifacts, and the e-mail tool's permission."""

from decimal import Decimal

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('chat', '0009_ledger_moves_to_billing'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='AgentRun',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('goal', models.TextField()),
                ('model', models.CharField(max_length=100)),
                ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('awaiting_approval', 'Awaiting Approval'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('cancelled', 'Cancelled'), ('interrupted', 'Interrupted')], default='queued', max_length=20)),
                ('progress', models.PositiveSmallIntegerField(default=0, help_text='0-100')),
                ('current_step', models.CharField(blank=True, help_text='The step under way, in plain words.', max_length=200)),
                ('result', models.TextField(blank=True)),
                ('error_code', models.CharField(blank=True, max_length=40)),
                ('error_text', models.TextField(blank=True)),
                ('tokens', models.PositiveIntegerField(default=0)),
                ('cost_usd', models.DecimalField(decimal_places=8, default=Decimal('0'), max_digits=14)),
                ('cancel_requested', models.BooleanField(default=False)),
                ('created', models.DateTimeField(default=django.utils.timezone.now)),
                ('started', models.DateTimeField(blank=True, null=True)),
                ('finished', models.DateTimeField(blank=True, null=True)),
                ('conversation', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='agent_runs', to='chat.conversation')),
                ('owner', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='agent_runs', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-created', '-id'],
                'permissions': [('use_email_tool', 'Can let agent runs send e-mail (each one approved by the user)')],
            },
        ),
        migrations.CreateModel(
            name='AgentStep',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('index', models.PositiveIntegerField(help_text="The step's place in its run, from 1.")),
                ('kind', models.CharField(choices=[('model', 'Model'), ('tool', 'Tool'), ('approval', 'Approval')], max_length=10)),
                ('title', models.CharField(max_length=200)),
                ('status', models.CharField(choices=[('running', 'Running'), ('awaiting_approval', 'Awaiting Approval'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('refused', 'Refused'), ('rejected', 'Rejected')], default='running', max_length=20)),
                ('tool', models.CharField(blank=True, max_length=60)),
                ('call_id', models.CharField(blank=True, help_text="The model's id for this tool call.", max_length=100)),
                ('arguments', models.JSONField(blank=True, default=dict)),
                ('result', models.JSONField(blank=True, null=True)),
                ('error', models.TextField(blank=True)),
                ('text', models.TextField(blank=True, help_text="A model step's text.")),
                ('idempotency_key', models.CharField(blank=True, max_length=80, null=True, unique=True)),
                ('tokens', models.PositiveIntegerField(default=0)),
                ('cost_usd', models.DecimalField(decimal_places=8, default=Decimal('0'), max_digits=14)),
                ('decided_at', models.DateTimeField(blank=True, null=True)),
                ('started', models.DateTimeField(default=django.utils.timezone.now)),
                ('finished', models.DateTimeField(blank=True, null=True)),
                ('decided_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('run', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='steps', to='agents.agentrun')),
            ],
            options={
                'ordering': ['run', 'index'],
            },
        ),
        migrations.CreateModel(
            name='Artifact',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=120)),
                ('content_type', models.CharField(default='text/markdown', max_length=60)),
                ('content', models.TextField()),
                ('created', models.DateTimeField(default=django.utils.timezone.now)),
                ('run', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='artifacts', to='agents.agentrun')),
            ],
        ),
        migrations.AddIndex(
            model_name='agentrun',
            index=models.Index(fields=['owner', 'created'], name='agents_agen_owner_i_22c7d7_idx'),
        ),
        migrations.AddIndex(
            model_name='agentrun',
            index=models.Index(fields=['status'], name='agents_agen_status_7a307a_idx'),
        ),
        migrations.AddConstraint(
            model_name='agentstep',
            constraint=models.UniqueConstraint(fields=('run', 'index'), name='agents_step_unique_index'),
        ),
        migrations.AddConstraint(
            model_name='artifact',
            constraint=models.UniqueConstraint(fields=('run', 'name'), name='agents_artifact_unique_name'),
        ),
    ]
