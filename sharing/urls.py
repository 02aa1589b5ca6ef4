from django.urls import path

from sharing import views

app_name = "sharing"

urlpatterns = [
    path("s/<str:token>", views.shared, name="shared"),
]
