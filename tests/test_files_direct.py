# ruff: noqa: F811 - the fixtures imported from files_support are redefined as arguments
"""Stores without direct uploads keep every byte going through the app (issue 18, item 5).

The local store does not provide ``IDirectUploads``, and the S3 store only does with
``presigned_uploads = true`` (not set here): a session in numbered parts says ``"direct":
false`` even when the client offers to send its parts there (``"direct": true``), and
asking for a presigned URL is ``409 upload_mode``.  Direct uploads themselves
are tested against moto's server in plugins/modelreg-s3/tests/test_direct_uploads.py.
"""

from __future__ import annotations

import hashlib

from files_support import (  # noqa: F401 - fixtures
    MIN_CHUNK,
    files_app,
    files_wsgi,
    s3_endpoint,
)
from helpers import API, create_model, create_version


def test_sessions_go_through_the_app_unless_the_store_offers_direct_uploads(files_app):
    create_model(files_app, "plain")
    number = create_version(files_app, "plain")["number"]
    part_size = MIN_CHUNK[files_app.app.storage_backend]
    opened = files_app.post_json(f"{API}/models/plain/versions/{number}/uploads",
                                 {"path": "a.bin", "size": part_size + 1,
                                  "part_size": part_size, "direct": True}, status=201).json
    assert (opened["direct"], opened["status"], opened["error"]) == (False, "open", None)
    answer = files_app.post_json(f"{opened['location']}/parts/1/url",
                                 {"digest": f"sha256:{hashlib.sha256(b'').hexdigest()}"},
                                 status=409).json
    assert answer["error"]["code"] == "upload_mode"
    files_app.delete(opened["location"], status=204)
