"""Keystone's WSGI app behind a test-only stand-in for Apache mod_auth_openidc.

On real EGI FedCloud sites Apache + mod_auth_openidc validate the EGI Check-in access token sent as
`Authorization: Bearer ...` to the federation auth URL and hand Keystone the token's claims as
OIDC-* environment variables. Here a bearer token of the form

    fake:<sub>:<entitlement>

becomes OIDC-iss=https://aai.egi.eu/auth/realms/egi, OIDC-sub=<sub> and
OIDC-eduperson_entitlement=<entitlement>. Any other bearer token on an OS-FEDERATION URL gets 401,
as mod_auth_openidc would answer for a token it cannot validate. Keystone itself (real) applies
the mapping, so an entitlement that the mapping does not know also ends in 401.
No real token validation: test-only. Served by uwsgi (conf/keystone-uwsgi.ini), which sets
OS_KEYSTONE_CONFIG_DIR.
"""
from keystone.server import wsgi as ks_wsgi

_app = ks_wsgi.initialize_public_application()
ISS = "https://aai.egi.eu/auth/realms/egi"


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    authz = environ.get("HTTP_AUTHORIZATION", "")
    if "/OS-FEDERATION/" in path and authz.startswith("Bearer "):
        token = authz.split(" ", 1)[1].strip()
        parts = token.split(":", 2)
        if len(parts) == 3 and parts[0] == "fake" and parts[1] and parts[2]:
            _, sub, entitlement = parts
            environ.update({"OIDC-iss": ISS, "OIDC-sub": sub,
                            "OIDC-eduperson_entitlement": entitlement, "REMOTE_USER": sub})
        else:
            body = b'{"error": {"code": 401, "title": "Unauthorized", "message": "invalid bearer token"}}'
            start_response("401 Unauthorized", [("Content-Type", "application/json"),
                                                 ("Content-Length", str(len(body))),
                                                 ("WWW-Authenticate", 'Bearer error="invalid_token"')])
            return [body]
    return _app(environ, start_response)
