"""The ledger and cost alerts now belong to the billing app; their tables stay (billing 0001)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0008_message_conversation_index"),
        ("billing", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="CostAlert"), migrations.DeleteModel(name="UsageRecord")],
        ),
    ]
