"""A small stand-in for the Functions host: HTTP (http.py) and queue (queues.py) halves."""
