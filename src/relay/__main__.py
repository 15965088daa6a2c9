"""``python -m relay``: the same as the ``relay`` command (supervised worker processes start this way)."""

from __future__ import annotations

from relay.cli.main import main

if __name__ == "__main__":
    main()
