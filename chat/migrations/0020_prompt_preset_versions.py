"""Presets get versions: each preset's text becomes its version 1, in force; conversations whose
text is still their preset's follow it from now on, those edited by hand keep their own copy."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


def give_each_preset_its_first_version(apps, schema_editor):
    PromptPreset = apps.get_model("chat", "PromptPreset")
    PromptPresetVersion = apps.get_model("chat", "PromptPresetVersion")
    Conversation = apps.get_model("chat", "Conversation")
    for preset in PromptPreset.objects.all().iterator():
        text = preset.text.strip()  # as the admin's form keeps it from now on
        version = PromptPresetVersion.objects.create(preset=preset, number=1, text=text, note="The text before versions.")
        PromptPreset.objects.filter(pk=preset.pk).update(current_version=version)
        # A conversation's prompt is stored stripped; a preset's text was not always.
        Conversation.objects.filter(preset=preset, system_prompt__in={preset.text, text}).update(
            preset_version=version, system_prompt=text,
        )


def put_the_current_text_back(apps, schema_editor):
    PromptPreset = apps.get_model("chat", "PromptPreset")
    for preset in PromptPreset.objects.select_related("current_version").iterator():
        PromptPreset.objects.filter(pk=preset.pk).update(text=preset.current_version.text if preset.current_version else "")


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0019_model_temperature'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='PromptPresetVersion',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('number', models.PositiveIntegerField()),
                ('text', models.TextField(max_length=20000)),
                ('created', models.DateTimeField(default=django.utils.timezone.now)),
                ('note', models.CharField(blank=True, help_text="What changed, in the admin's words.", max_length=200)),
                ('created_by', models.ForeignKey(blank=True, help_text='The admin who made it; empty for the text a preset had before versions.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('preset', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='versions', to='chat.promptpreset')),
                ('restored_from', models.ForeignKey(blank=True, help_text='A rollback: the earlier version whose text this one copies.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='chat.promptpresetversion')),
            ],
            options={
                'ordering': ['preset', '-number'],
            },
        ),
        migrations.AddField(
            model_name='conversation',
            name='preset_version',
            field=models.ForeignKey(blank=True, help_text="The preset's version the conversation follows (its last reply got it); empty when its text was edited.", null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='chat.promptpresetversion'),
        ),
        migrations.AddField(
            model_name='promptpreset',
            name='current_version',
            field=models.ForeignKey(blank=True, help_text="The version in force: what its conversations' next replies get.", null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='chat.promptpresetversion'),
        ),
        migrations.AddConstraint(
            model_name='promptpresetversion',
            constraint=models.UniqueConstraint(fields=('preset', 'number'), name='chat_preset_version_number'),
        ),
        migrations.RunPython(give_each_preset_its_first_version, put_the_current_text_back),
        # Blank first, so that undoing the removal can add the column back to existing rows.
        migrations.AlterField(model_name='promptpreset', name='text', field=models.TextField(blank=True, max_length=20000)),
        migrations.RemoveField(model_name='promptpreset', name='text'),
    ]
