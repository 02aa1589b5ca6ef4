from django.urls import path

from chat import views

app_name = "chat"

urlpatterns = [
    path("", views.home, name="home"),
    path("c/<int:pk>/", views.conversation, name="conversation"),
    path("c/<int:pk>/earlier/", views.earlier, name="earlier"),
    path("c/<int:pk>/rename/", views.rename, name="rename"),
    path("c/<int:pk>/delete/", views.delete, name="delete"),
    path("conversations/", views.sidebar, name="sidebar"),
    path("conversations/new/", views.new_conversation, name="new"),
]
