"""The codes a compiled training step writes into its status[0]: what happened to the batch (``fastdl.step``
emits the steps that write them; populations read them in their compiled call, ``population.py``)."""

DONE, SKIPPED, BAD_INPUT, BAD_TARGET, NONFINITE_OUTPUT, NONFINITE_BATCHNORM = 1, 0, -1, -2, -3, -4
