"""RQ entry points. Jobs take ids and call services; the logic lives in ``runner``."""

from requests_app.runner import run_request as _run


def run_request(request_pk: int) -> str:
    return _run(request_pk)
