"""Pure core: errors, the run schema, the search space, seed racing, the language table and
the number formats. Standard library and PyYAML only; every other layer may import it.
"""

from __future__ import annotations

from raystilts.core.errors import (
    UserError,
)

__all__ = [
    "UserError",
]
