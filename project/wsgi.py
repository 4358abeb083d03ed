"""The WSGI entry point for gunicorn: ``gunicorn -c gunicorn.conf.py project.wsgi:app``."""

from project import create_app

app = create_app()
