"""gunicorn settings for production: ``gunicorn -c gunicorn.conf.py project.wsgi:app``.

Every value can be overridden from the environment (``GUNICORN_*``) or the
command line. The default worker class is ``gthread``: each worker serves
``GUNICORN_THREADS`` connections at once, and a WebSocket holds one thread
for as long as it is open. For many thousands of long-lived sockets per host,
run ``GUNICORN_WORKER_CLASS=gevent`` (``pip install gevent``), where each
connection is a greenlet; see the README.
"""

import multiprocessing
import os
import sys

worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
if worker_class == "gevent":
    # Patch before anything imports ssl or threading (gevent's own advice); the
    # workers inherit the patched modules from this process.
    from gevent import monkey

    monkey.patch_all()

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "10000"))  # gevent

# gthread and gevent workers heartbeat from their main loop, so a long-lived
# WebSocket does not trip this; it only catches a worker that is truly stuck.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))

accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
errorlog = os.environ.get("GUNICORN_ERROR_LOG", "-")
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'

# Trust X-Forwarded-* only from the reverse proxy in front of gunicorn.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")

# Requests larger than this on the request line or headers are refused early.
# gunicorn >= 25 opens a control socket for `gunicornc` at one path per user
# ($HOME/.gunicorn/gunicorn.ctl): every gunicorn of that user (two sites, the test
# suite's servers) takes it over in turn, so a command could reach the wrong one.
# Off unless GUNICORN_CONTROL_SOCKET names a path of this deployment's own.
control_socket_disable = not os.environ.get("GUNICORN_CONTROL_SOCKET")
if not control_socket_disable:
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]
limit_request_line = 8190
limit_request_fields = 100


def on_starting(server):  # noqa: ARG001 - gunicorn's hook signature
    """Validate settings once, in the master, and stop with one line if they are wrong."""
    from project.settings import ConfigurationError, load_settings

    try:
        load_settings()
    except ConfigurationError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)


def post_worker_init(worker):  # noqa: ARG001 - gunicorn's hook signature
    """Say goodbye to long-lived clients (WebSockets get 1001) when this worker is stopped."""
    from project.lifecycle import install_signal_handlers

    install_signal_handlers()
