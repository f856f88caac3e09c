"""The ALTCHA v2 reference implementation (PyPI `altcha`, pinned in scripts/test.sh) on the other
side of Portcullis' challenges, for the interop tests in tests/api/challenge.rs.

    solve            stdin: a challenge's JSON    stdout: the payload (base64) solving it
    verify KEY_HEX   stdin: a payload (base64)    stdout: "verified" or why not
    create KEY_HEX   stdout: a challenge's JSON, signed with the key, created by the reference
"""
import json
import sys
import time

import altcha


def main() -> None:
    command = sys.argv[1]
    if command == "solve":
        challenge = altcha.Challenge.from_dict(json.load(sys.stdin))
        solution = altcha.solve_challenge(challenge, timeout=60)
        if solution is None:
            sys.exit("no solution within 60 s")
        print(altcha.Payload(challenge, solution).to_base64())
    elif command == "verify":
        result = altcha.verify_solution(sys.stdin.read().strip(), bytes.fromhex(sys.argv[2]))
        print("verified" if result.verified else json.dumps(result.__dict__))
    elif command == "create":
        challenge = altcha.create_challenge(
            "PBKDF2/SHA-256",
            1000,
            key_prefix="0",
            expires_at=int(time.time()) + 300,
            hmac_secret=bytes.fromhex(sys.argv[2]),
        )
        print(json.dumps(challenge.to_dict()))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
