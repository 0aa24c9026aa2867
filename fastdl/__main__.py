"""Command line: ``fastdl train`` (the main job: an MLP on the digits shipped with fastdl), ``fastdl bench``
(the benchmark suite, see ``fastdl.bench``) and ``fastdl demo`` (a tiny network on two moons)."""

import argparse
import sys

from . import backend, demo, train_digits


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from .bench.runner import main as bench_main

        try:
            return bench_main(argv[1:])
        except (RuntimeError, ValueError) as error:
            print(f"fastdl: {error}", file=sys.stderr)
            return 2
    parser = argparse.ArgumentParser(prog="fastdl", description="fastdl: fused deep-learning kernels")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("bench", help="run the benchmark suite (fastdl bench --help for its options)")
    demo_parser = commands.add_parser("demo", help="train a tiny network on two moons and print the loss")
    demo_parser.add_argument("--backend", default=None, help="numpy, cpu (default) or gpu")
    demo_parser.add_argument("--steps", type=int, default=300)
    train_parser = commands.add_parser("train", help="train an MLP on the handwritten digits and report accuracy")
    train_parser.add_argument("--backend", default=None, help="numpy, cpu (default) or gpu")
    train_parser.add_argument("--epochs", type=int, default=40)
    train_parser.add_argument("--batch-size", type=int, default=32)
    train_parser.add_argument("--optimizer", default="adam", help="adam (default), adamw, sgd, rmsprop or lamb")
    train_parser.add_argument("--lr", type=float, default=3e-3)
    train_parser.add_argument("--hidden", type=int, default=128)
    train_parser.add_argument("--seed", type=int, default=0)
    train_parser.add_argument("--out", default="fastdl-digits", help="folder for the checkpoint and the plot")
    train_parser.add_argument("--distributed", action="store_true",
                              help="data-parallel over the ranks of mpirun (mpirun -n 2 fastdl train --distributed)")
    args = parser.parse_args(argv)
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
