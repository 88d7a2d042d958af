from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "providers"
    verbose_name = "Provider connections (Google, Microsoft)"
    default_auto_field = "django.db.models.BigAutoField"
