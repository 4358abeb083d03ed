"""The feature apps; each is switched on by listing it in ``project.settings.INSTALLED_APPS``."""
