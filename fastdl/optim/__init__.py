"""Fused in-place optimizers over one flat parameter buffer, global-norm clipping and learning-rate schedules."""

from . import lr_scheduler
from .algorithms import LAMB
from .algorithms import LARS
from .algorithms import SGD
from .algorithms import Adagrad
from .algorithms import Adam
from .algorithms import AdamW
from .algorithms import RMSprop
from .clip import clip_grad_norm
from .clip import clip_grad_norm_
from .flat import FlatParameters
from .groups import decays_weight
from .groups import weight_decay_groups
from .optimizer import Optimizer
from .optimizer import ParamGroup
