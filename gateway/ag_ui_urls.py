from django.urls import path

from gateway import ag_ui

urlpatterns = [
    path("agent", ag_ui.agent, name="ag-ui-agent"),
]
