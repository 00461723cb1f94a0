"""switchboard's built-in local Functions host: developer tooling, never deployed (listed in .funcignore).

``make run`` uses it when Azure Functions Core Tools (``func``) are absent; the tests and the bench use it as
their host, so there is one host, not two. It behaves like the real host + Python worker 4.34 wherever the app
could notice (see ``devhost/http.py`` and ``devhost/queues.py``):

    python -m devhost [--port 7071]          serve function_app.py like ``func start``
    python -m devhost.run                    what ``make run`` runs: Azurite + Twilio fake + func or this host
    python -m devhost.simulate sms|call|...  play Twilio against a running app (signed webhooks)
"""
