"""The run lock across machines: a second machine takes the engagement store over only once
the first one's run is dead and its lease ran out, never while it lives (it renews).

"Another machine" is real as far as the lock can tell: the second run is started in a pid
namespace of its own (`unshare`), where the first run's pid means nothing, exactly as a run on
another host or in another container; the store is shared, as on a database server.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text

from target_brevo.store import store_url
from tests.target.conftest import TARGET, on_both_stores, singer_lines
from tests.target.test_resilience import opened_events, sent_ids

if TYPE_CHECKING:
    from fakes.brevo import FakeBrevo
    from tests.target.conftest import TargetRunner

LEASE = 10  # seconds (a live run renews every 2): well over a start of the target


def on_another_machine(*command: str) -> list[str]:
    """`command` run in a new pid namespace (as root; a user namespace maps root otherwise)."""
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *user, "--pid", "--fork", "--mount-proc", *command]


def lock_expires_at(engagement_store: str) -> float:
    """When the lease of the run holding the store runs out (epoch seconds)."""
    engine = create_engine(store_url(engagement_store))
    with engine.connect() as conn:
        held = conn.execute(text("SELECT expires_at FROM brevo_run_lock")).scalar_one()
    engine.dispose()
    return float(held)


@on_both_stores
def test_another_machine_takes_over_only_after_the_first_run_died_and_its_lease_ran_out(
    brevo: FakeBrevo, target: TargetRunner, engagement_store: str
) -> None:
    lines = singer_lines({"events": opened_events(3)})
    # No wait for the store: each attempt of the second machine is one look at the lock.
    config = target.settings_file(run_lock_lease_seconds=LEASE, run_lock_wait_seconds=0)
    data = target.input_file(lines)

    def second_machine() -> subprocess.CompletedProcess[str]:
        command = on_another_machine(TARGET, "--config", str(config), "--input", str(data))
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    brevo.hold("POST /v3/events/batch", after=0)
    first = target.start(config, data)
    assert brevo.held.wait(timeout=60), "the first run never sent its events"
    # Alive but busy (Brevo holds its batch): it commits nothing, and its lease is renewed.
    time.sleep(2 * LEASE)
    refused = second_machine()
    assert refused.returncode == 1, refused.stderr
    assert "holds the engagement store" in refused.stderr
    assert lock_expires_at(engagement_store) > time.time()
    first.kill()  # the first machine dies mid-run
    first.wait(timeout=30)
    still = second_machine()  # its pid means nothing here: only the lease can free the store
    assert still.returncode == 1, still.stderr
    assert "holds the engagement store" in still.stderr
    time.sleep(max(0.0, lock_expires_at(engagement_store) - time.time()) + 0.5)
    brevo.release()
    taken = second_machine()
    assert taken.returncode == 0, taken.stderr
    brevo.settle()
    assert sent_ids(brevo) == {"o0": 1, "o1": 1, "o2": 1}
    assert [json.loads(x) for x in taken.stdout.splitlines()] == [{"bookmarks": {"run": 1}}]
