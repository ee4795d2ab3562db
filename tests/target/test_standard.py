"""The singer-sdk standard target test suite, run against target-brevo.

The suite's streams are none target-brevo writes, so this checks the Singer plumbing: schema
and state handling, odd records, errors where the SDK demands them. No Brevo call is needed
(nothing is queued), which `base_url` on a closed port would reveal at once.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from singer_sdk.testing import get_target_test_class

from target_brevo.target import TargetBrevo

# The SDK takes the config when the class is made, at collection: the folder is made then, and
# removed when the test process ends (it used to be left behind by every collection).
_FOLDER = Path(tempfile.mkdtemp(prefix="target-brevo-standard-"))
atexit.register(shutil.rmtree, _FOLDER, ignore_errors=True)
_STORE = _FOLDER / "engagement.sqlite"

TestTargetBrevoStandard = get_target_test_class(
    TargetBrevo,
    config={
        "api_key": "xkeysib-standard",
        "base_url": "http://127.0.0.1:9/v3",
        "engagement_store": str(_STORE),
    },
)
