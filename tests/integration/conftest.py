"""Integration tests: real local servers (moto server, the sync.so emulator, the one-machine stack)."""

from tests.log_scan import scan_every_stack  # noqa: F401 - scans every stack's logs as it stops
