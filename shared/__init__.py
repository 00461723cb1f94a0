"""switchboard: Twilio voice and SMS on Azure Functions.

Everything here is importable without ``azure.functions``; ``function_app.py`` adapts triggers to these calls.
Heavy SDKs (twilio.rest, azure.identity, azure.keyvault, azure.storage, azure.data.tables) are imported inside
the functions that need them, so a cold start pays only for what the first invocation uses.
"""

__version__ = "0.1.0"
APP_NAME = "switchboard"

# Phone numbers are masked in every log record, libraries included, from the moment the app is imported.
from .redact import install_log_redaction  # noqa: E402

install_log_redaction()
