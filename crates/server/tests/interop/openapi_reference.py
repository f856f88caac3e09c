"""The OpenAPI document checked by an independent validator (PyPI `openapi-spec-validator`,
pinned in scripts/test.sh), for tests/api/openapi.rs.

    openapi_reference.py validate   stdin: the document (JSON)   stdout: "valid", or the error
"""
import json
import sys

from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError


def main() -> None:
    if sys.argv[1] != "validate":
        sys.exit(f"unknown command {sys.argv[1]}")
    try:
        validate(json.load(sys.stdin))
    except OpenAPIValidationError as error:
        print(f"invalid: {error}")
        return
    print("valid")


if __name__ == "__main__":
    main()
