"""Where the CUDA sources live, and the definitions every compiler of them receives (NVRTC on a device, g++ for the
emulator, the NVRTC check in the tests): the activation codes (from ``reference/activations.py``) and the launch
shapes the launchers assume, from this one place, so that a kernel and its launcher cannot disagree on them."""

import importlib.resources

from ..reference import activations

BLOCK = 256  # threads of a one-dimensional block: the block reductions assume exactly this many
COLUMN_BLOCK = (32, 8)  # (x, y) threads of a column-tile block: 32 columns, 8 rows at a time
COMBINE_Y = 32  # rows of threads that combine batch norm's per-chunk partials, under COLUMN_BLOCK[0] columns
UNROLL = 4  # rows each thread of batch norm's element-wise passes loads before using them
TILE_ROWS = UNROLL * COLUMN_BLOCK[1]  # rows of one tile of those passes


def folder():
    return importlib.resources.files("fastdl.kernels") / "cuda"


def definitions():
    """The ``-DNAME=value`` options every compilation of a CUDA source gets."""
    values = {"FASTDL_BLOCK": BLOCK, "FASTDL_COLUMN_BLOCK_X": COLUMN_BLOCK[0], "FASTDL_COLUMN_BLOCK_Y": COLUMN_BLOCK[1],
              "FASTDL_COMBINE_Y": COMBINE_Y, "FASTDL_UNROLL": UNROLL}
    values.update({f"FASTDL_{name}": code for name, code in activations.CODES.items()})
    return [f"-D{name}={value}" for name, value in values.items()]
