"""modelreg: a model registry for machine-learning teams.

:func:`main` is the PasteDeploy app factory (``use = egg:modelreg``); the application is
assembled in :func:`modelreg.config.configure`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0.dev0"


def main(global_config: dict[str, Any], **settings: Any) -> Any:
    """Build the WSGI application from ini settings."""
    from .config import configure

    return configure(settings).make_wsgi_app()
