"""Command line: ``python -m labkit doctor``."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit", description="Sparse Models Lab helper commands")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="report what this machine can run and whether the lab will work")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        from labkit.doctor import main as doctor_main

        return doctor_main()
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
