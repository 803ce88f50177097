"""The runner core (core.py) and the hooks features plug into it with (hook.py)."""

from .core import Guard, Run, Runner
from .hook import Delivery, Hook

__all__ = ["Delivery", "Guard", "Hook", "Run", "Runner"]
