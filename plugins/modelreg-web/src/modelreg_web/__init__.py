"""modelreg-web: the web UI."""
