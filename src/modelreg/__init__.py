"""modelreg: a model registry for machine-learning teams.

:func:`main` is the PasteDeploy app factory (``use = egg:modelreg``); the application is
assembled in :func:`modelreg.config.configure`.
"""

from __future__ import annotations

from typing import Any

from .version import __version__ as __version__


def main(global_config: dict[str, Any], **settings: Any) -> Any:
    """Build the WSGI application from ini settings."""
    from .config import configure
    from .limits import check_server_body_limit
    from .servers import check_pool_size, server_threads

    app = configure(settings).make_wsgi_app()
    check_pool_size(app.registry["db_engine"], app.registry.settings,
                    server_threads(global_config))
    check_server_body_limit(app.registry.settings, global_config)
    return app
