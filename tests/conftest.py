"""Registered once for every suite: the log scan checks each one-machine stack's logs as it stops."""

pytest_plugins = ["tests.log_scan"]
