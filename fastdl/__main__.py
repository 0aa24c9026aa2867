"""Command line: ``fastdl demo`` (the default) trains a tiny network and prints the loss falling."""

import argparse
import sys

from . import backend, demo


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastdl", description="fastdl: fused deep-learning kernels")
    commands = parser.add_subparsers(dest="command")
    demo_parser = commands.add_parser("demo", help="train a tiny network on two moons and print the loss")
    demo_parser.add_argument("--backend", default=None, help="numpy, cpu (default) or gpu")
    demo_parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    if args.command in (None, "demo"):
        try:
            if getattr(args, "backend", None):
                backend.set_backend(args.backend)
        except (RuntimeError, ValueError) as error:
            print(f"fastdl: {error}", file=sys.stderr)
            return 2
        demo.main(steps=getattr(args, "steps", 300))
    return 0


if __name__ == "__main__":
    sys.exit(main())
