"""fastdl's benchmark suite: every kernel against the machine's measured ceilings and against PyTorch.

    fastdl bench                 # the quick suite (under two minutes on 2 cores)
    fastdl bench --suite full    # every case; both also run as ``python -m fastdl.bench``

``ceilings`` measures memory bandwidth (copy, triad) and BLAS GEMM GFLOP/s; ``cases`` defines each op with the
bytes or flops it must move; ``runner`` times every contender in interleaved rounds and writes a table, JSON and
a PNG. ``bench/bench_cases.py`` runs the same cases under pytest-benchmark.
"""
