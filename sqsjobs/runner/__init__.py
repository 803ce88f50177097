"""The runner core (core.py) and the hooks features plug into it with (hook.py)."""

from .core import Guard, Run, Runner
from .entering import Call
from .hook import Delivery, Hook

__all__ = ["Call", "Delivery", "Guard", "Hook", "Run", "Runner"]
