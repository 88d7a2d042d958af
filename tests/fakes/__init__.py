"""Local fakes of Google and Microsoft that speak their real wire protocols.

Nothing in the tests reaches the internet, so the real client libraries (google-api-python-client,
google-auth, google-auth-oauthlib, msal, requests) are pointed at these servers instead:

- ``tests.fakes.google``: Google OAuth (consent page, token, revoke, tokeninfo, introspection for
  Dovecot) and the Gmail API v1 with the multipart batch endpoint and per-user quota.
- ``tests.fakes.microsoft``: Microsoft identity platform (OIDC discovery, authorize, admin consent,
  token) and Microsoft Graph mail, over TLS with a test CA, with Retry-After throttling and the
  4-concurrent-requests-per-mailbox limit.

Each runs by hand (``python -m tests.fakes.google --port 8765``) or from a fixture
(``start_google_fake()`` / ``start_microsoft_fake()``) on a free loopback port in a thread.
"""
