from django.apps import AppConfig


class RequestsAppConfig(AppConfig):
    name = "requests_app"
    verbose_name = "Migration requests"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Hook the per-tenant limit and the notifications on every state transition (each
        registered once, whatever number of times ready() runs)."""
        from requests_app import lifecycle, limits, notifications

        for hook in (limits.on_transition, notifications.on_transition):
            if hook not in lifecycle.ON_TRANSITION:
                lifecycle.ON_TRANSITION.append(hook)
