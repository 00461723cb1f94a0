"""Moved to ``devhost/twilio_fake.py`` (``make run`` uses it too); kept so ``tests.peers.twilio_fake`` imports work."""

from devhost.twilio_fake import *  # noqa: F401,F403
from devhost.twilio_fake import _ERRORS, _basic_auth, _post_signed, _serve_for_local_runs, _Server  # noqa: F401

if __name__ == "__main__":
    _serve_for_local_runs()
