"""What error reports (Django's debug 500 page, mail to ADMINS) may show of a request.

Django's own filter hides ``sensitive_post_parameters`` and ``sensitive_variables`` only when
DEBUG is off, and then only the names listed by the nearest decorated caller of a frame. Here
both hold in every mode (``make run`` runs with DEBUG=1, and its error pages end up on shared
screens), and a frame is hidden as much as every decorated caller above it asks: a view marked
``@sensitive_variables()`` hides its whole call tree, whatever narrower marks lie below it.
"""

from __future__ import annotations

from django.views.debug import SafeExceptionReporterFilter

ALL = "__ALL__"


def _marked_above(frame) -> str | set[str] | None:
    """The variables hidden in ``frame``: ALL, the union of the names its decorated callers
    (itself included) list, or None if none is decorated."""
    names: set[str] = set()
    found = False
    while frame is not None:
        if frame.f_code.co_name == "sensitive_variables_wrapper" and "sensitive_variables_wrapper" in frame.f_locals:
            marked = getattr(frame.f_locals["sensitive_variables_wrapper"], "sensitive_variables", None)
            if marked == ALL:
                return ALL
            names.update(marked or ())
            found = True
        frame = frame.f_back
    return names if found else None


class AlwaysSafeExceptionReporterFilter(SafeExceptionReporterFilter):
    def is_active(self, request) -> bool:
        return True

    def get_traceback_frame_variables(self, request, tb_frame):
        marked = _marked_above(tb_frame)
        if marked is None:
            return super().get_traceback_frame_variables(request, tb_frame)
        cleansed = {
            name: self.cleansed_substitute if marked == ALL or name in marked
            else self.cleanse_special_types(request, value)
            for name, value in tb_frame.f_locals.items()}
        if tb_frame.f_code.co_name == "sensitive_variables_wrapper":
            cleansed.update(func_args=self.cleansed_substitute, func_kwargs=self.cleansed_substitute)
        return cleansed.items()
