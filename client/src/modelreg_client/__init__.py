"""Light client for the modelreg model registry.

This distribution owns the ``modelreg`` command and :class:`Client`, the Python API::

    from modelreg_client import Client

    with Client("http://localhost:6543", token) as client:
        result = client.push("./model-dir", "fraud-detector", alias="staging")
        client.pull("fraud-detector@staging", "./elsewhere")

It depends on nothing heavy (no Pyramid, no SQLAlchemy); the server distribution adds its
admin subcommands through the ``modelreg.cli`` entry-point group.
"""

__version__ = "0.1.0.dev0"

from .cache import Cache
from .client import Client  # after __version__, which the client sends
from .errors import (
    Conflict,
    IntegrityError,
    InvalidRequest,
    ModelregError,
    NetworkError,
    NotCached,
    NotFound,
    PermissionDenied,
    ServerError,
    Unauthorized,
    UnwritablePath,
    VersionRejected,
)
from .refs import Ref, parse_ref
from .transfer import Progress
from .types import (
    Alias,
    AliasMove,
    FileEntry,
    FileList,
    Finding,
    Model,
    Part,
    Problem,
    PullResult,
    PushResult,
    Upload,
    Version,
)

__all__ = [
    "Alias",
    "AliasMove",
    "Cache",
    "Client",
    "Conflict",
    "FileEntry",
    "FileList",
    "Finding",
    "IntegrityError",
    "InvalidRequest",
    "Model",
    "ModelregError",
    "NetworkError",
    "NotCached",
    "NotFound",
    "Part",
    "PermissionDenied",
    "Problem",
    "Progress",
    "PullResult",
    "PushResult",
    "Ref",
    "ServerError",
    "Unauthorized",
    "UnwritablePath",
    "Upload",
    "Version",
    "VersionRejected",
    "__version__",
    "parse_ref",
]
