from support import admin_feedback  # noqa: F401
