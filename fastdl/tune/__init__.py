"""Many small models at once: ``Population`` (K models trained in one compiled step) and ``grid_search`` on top."""

from .grid import GridSearchResult  # noqa: F401
from .grid import expand_grid  # noqa: F401
from .grid import grid_search  # noqa: F401
from .population import Population  # noqa: F401
from .population import PopulationHistory  # noqa: F401
