"""TOTP codes from an independent implementation (PyPI `pyotp`), for the interop tests.

    totp_reference.py code UNIX_SECONDS   reads an otpauth:// URI on stdin, prints its code then
"""
import sys

import pyotp


def main():
    command, seconds = sys.argv[1], int(sys.argv[2])
    if command != "code":
        sys.exit(f"unknown command {command}")
    totp = pyotp.parse_uri(sys.stdin.read().strip())
    print(totp.at(seconds))


if __name__ == "__main__":
    main()
