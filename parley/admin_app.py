"""The admin app, configured to serve Parley's admin site (parley/admin.py) as `admin.site`.

Its own module rather than parley/apps.py, which belongs to the `parley` app: INSTALLED_APPS names
this class directly, and it imports no models since it is loaded before they are.
"""

from django.contrib.admin.apps import AdminConfig


class ParleyAdminConfig(AdminConfig):
    default_site = "parley.admin.ParleyAdminSite"
