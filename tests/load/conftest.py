"""Load tests (`make load`): like the unit tests, AWS is moto in process, with the network off."""

from tests.unit.conftest import _no_network

__all__ = ["_no_network"]
