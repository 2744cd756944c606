"""modelreg-webhooks: signed delivery of registry events to HTTP subscribers.

The hook implementations are in :mod:`modelreg_webhooks.plugin`; the tables in
:mod:`modelreg_webhooks.tables`; sending and retrying in :mod:`modelreg_webhooks.delivery`;
the REST API in :mod:`modelreg_webhooks.views`.
"""
