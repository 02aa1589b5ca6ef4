from django.apps import AppConfig


class BillingConfig(AppConfig):
    """Plans enforced on every model call: limits, reservations, the ledger, cost alerts, usage reports."""

    name = "billing"
