"""Access tokens checked by an independent implementation (PyPI `pyjwt` with `cryptography`,
pinned in scripts/test.sh), the way another service would: keys fetched from the JWKS URL.

    jwt_reference.py verify JWKS_URL ISSUER   stdin: a JWT   stdout: its verified claims (JSON),
                                              or {"error": why} when pyjwt refuses it
"""
import json
import sys

import jwt


def main() -> None:
    command, jwks_url, issuer = sys.argv[1], sys.argv[2], sys.argv[3]
    if command != "verify":
        sys.exit(f"unknown command {command}")
    token = sys.stdin.read().strip()
    try:
        key = jwt.PyJWKClient(jwks_url, cache_keys=False).get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["EdDSA"],
            issuer=issuer,
            options={"require": ["exp", "iat", "iss", "sub", "jti"]},
        )
    except (jwt.InvalidTokenError, jwt.PyJWKClientError) as error:
        claims = {"error": f"{type(error).__name__}: {error}"}
    json.dump(claims, sys.stdout)


if __name__ == "__main__":
    main()
