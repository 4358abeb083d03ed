#!/usr/bin/env python
"""The project's command line: ``python manage.py --help`` lists every command."""

from project.cli import main

if __name__ == "__main__":
    main()
