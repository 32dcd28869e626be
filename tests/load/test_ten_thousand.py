"""10,000 queued jobs: dispatch still takes the head from the queue index, with no Scan.

Outside `make test` because moto answers index queries and batch writes in time proportional to
the table (about 2 minutes here); DynamoDB answers them in time proportional to the result.
"""

import pytest

from tests.unit.test_dispatch import World, dispatch_from_a_long_queue, world

__all__ = ["world"]


@pytest.mark.timeout(1200)  # moto's time, not the pipeline's (see above); measured, not asserted
def test_ten_thousand_queued_jobs_dispatch_from_the_index_head_without_a_scan(world: World) -> None:
    dispatch_from_a_long_queue(world, 10_000)
