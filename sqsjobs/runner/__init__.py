"""The runner core (core.py) and the hooks features plug into it with (hook.py)."""

from .core import Call, Guard, Run, Runner
from .hook import Delivery, Hook

__all__ = ["Call", "Delivery", "Guard", "Hook", "Run", "Runner"]
