"""The storage seam and its backends. Internal: may change in minor releases."""

from __future__ import annotations

from relay.storage.base import Admin, JobWriter, Maintenance, Notifier, Storage
from relay.storage.params import Capabilities

__all__ = ["Admin", "Capabilities", "JobWriter", "Maintenance", "Notifier", "Storage"]
