"""Command line: ``fastdl train`` (the main job: an MLP on the digits shipped with fastdl), ``fastdl bench``
(the benchmark suite, see ``fastdl.bench``) and ``fastdl demo`` (a tiny network on two moons)."""

import argparse
import math
import os
import sys

from . import backend, demo, train_digits


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _output_folder(text):
    """A folder that exists or can be made and written to: checked before any training starts."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    existing = os.path.abspath(text)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r} cannot be written ({existing!r} is not writable)")
    return text


def _parser():
    from . import __version__

    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="fastdl", description="fastdl: fused deep-learning kernels",
                                     formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"fastdl {__version__}")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("bench", help="run the benchmark suite (fastdl bench --help for its options)")
    backends = [name for name in backend.BACKEND_NAMES if name not in backend.EMULATED_BACKENDS]
    demo_parser = commands.add_parser("demo", help="train a tiny network on two moons and print the loss",
                                      formatter_class=formatter)
    demo_parser.add_argument("--backend", choices=backends, default=None, help="kernels to run (default: cpu)")
    demo_parser.add_argument("--steps", type=_positive_int, default=300, help="gradient-descent steps")
    train_parser = commands.add_parser("train", help="train an MLP on the handwritten digits and report accuracy",
                                       formatter_class=formatter)
    train_parser.add_argument("--backend", choices=backends, default=None, help="kernels to run (default: cpu)")
    train_parser.add_argument("--epochs", type=_positive_int, default=40,
                              help="most epochs (early stopping may end sooner)")
    train_parser.add_argument("--batch-size", type=_positive_int, default=32, help="samples per step (per rank)")
    train_parser.add_argument("--optimizer", choices=sorted(train_digits.OPTIMIZERS), default="adam",
                              help="optimizer (sgd: momentum 0.9, Nesterov)")
    train_parser.add_argument("--lr", type=_positive_float, default=3e-3, help="peak learning rate")
    train_parser.add_argument("--hidden", type=_positive_int, default=128, help="width of both hidden layers")
    train_parser.add_argument("--seed", type=int, default=0, help="seed of the weights, dropout and data order")
    train_parser.add_argument("--out", type=_output_folder, default="fastdl-digits",
                              help="folder for the checkpoint and the plot")
    train_parser.add_argument("--distributed", action="store_true",
                              help="data-parallel over the ranks of mpirun (mpirun -n 2 fastdl train --distributed)")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from .bench.runner import main as bench_main

        try:
            return bench_main(argv[1:])
        except (RuntimeError, ValueError) as error:
            print(f"fastdl: {error}", file=sys.stderr)
            return 2
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit:  # argparse's usage errors (2), --help and --version (0)
        return exit.code
    try:
        if getattr(args, "backend", None):
            backend.set_backend(args.backend)
        if args.command == "train":
            train_digits.train(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                               hidden=args.hidden, seed=args.seed, out=args.out, distributed=args.distributed)
        else:
            demo.main(steps=getattr(args, "steps", 300))
    except (RuntimeError, ValueError) as error:
        print(f"fastdl: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
