"""Light client for the modelreg model registry.

This distribution owns the ``modelreg`` command.  It depends on nothing heavy (no Pyramid,
no SQLAlchemy); the server distribution adds its admin subcommands through the
``modelreg.cli`` entry-point group.
"""

__version__ = "0.1.0.dev0"
