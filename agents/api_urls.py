from django.urls import path

from agents import api

urlpatterns = [
    path("conversations/<int:pk>/runs", api.conversation_runs, name="api-conversation-runs"),
    path("runs/<int:pk>", api.run_detail, name="api-run"),
    path("runs/<int:pk>/events", api.run_events, name="api-run-events"),
    path("runs/<int:pk>/cancel", api.run_cancel, name="api-run-cancel"),
    path("runs/<int:pk>/approvals/<int:step>", api.run_approval, name="api-run-approval"),
    path("runs/<int:pk>/artifacts/<str:name>", api.run_artifact, name="api-run-artifact"),
]
