"""Finding task modules: `autodiscover_tasks` imports `<package>.tasks` for each package.

A package without that module is skipped, as Celery skips it. A tasks module that exists
but fails to import stops the start with its own error (`DiscoveryError`, an ImportError
whose message carries the real one): a worker that silently runs without a project's
tasks would leave their messages to the dead letters.

With no packages given, Django's installed apps are used when Django is importable and
configured (DJANGO_SETTINGS_MODULE, or `settings.configure()`); beatq does not need Django.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterable
from types import ModuleType

from .exceptions import ConfigurationError

log = logging.getLogger("beatq.discovery")

Packages = Iterable[str] | Callable[[], Iterable[str]] | None


class DiscoveryError(ConfigurationError, ImportError):
    """A package named to `autodiscover_tasks` cannot be imported, or its tasks module
    raised ImportError; an ImportError too, as Celery's is."""


def django_packages() -> list[str]:
    """Django's installed apps (their packages), or [] when Django is not set up here."""
    if "django" not in sys.modules and importlib.util.find_spec("django") is None:
        return []
    from django.conf import settings  # type: ignore[import-not-found]

    if not (settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE")):
        return []
    import django  # type: ignore[import-not-found]
    from django.apps import apps  # type: ignore[import-not-found]

    if not apps.ready:  # tasks modules import models: the app registry must be ready
        django.setup()
    return [config.name for config in apps.get_app_configs()]


def packages_of(packages: Packages) -> list[str]:
    """The package names: a list, what a callable returns (read now, not when it was
    given: Django's `lambda: settings.INSTALLED_APPS`), or Django's installed apps."""
    if packages is None:
        return django_packages()
    if callable(packages):
        packages = packages()
    if isinstance(packages, str):
        return [packages]
    return list(packages)


def _package(name: str) -> ModuleType:
    """The package `name`; a Django AppConfig path (`blog.apps.BlogConfig`) is its app's
    package."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        failed = exc
    parent, _, attr = name.rpartition(".")
    config = None
    if isinstance(failed, ModuleNotFoundError) and failed.name == name and parent:
        try:
            config = getattr(importlib.import_module(parent), attr, None)
        except ImportError:
            config = None
    package = getattr(config, "name", None)
    if not isinstance(package, str):
        raise DiscoveryError(f"autodiscover_tasks: cannot import {name!r}: {failed}") from failed
    return importlib.import_module(package)


def related_module(package: str, related_name: str | None = "tasks") -> ModuleType | None:
    """`<package>.<related_name>`, imported; None when the package has no such module.
    With no related_name, the package itself."""
    found = _package(package)
    if not related_name:
        return found
    name = f"{found.__name__}.{related_name}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:  # the package has no tasks module: nothing to find there
            return None
        raise DiscoveryError(f"cannot import {name} (autodiscover_tasks): {exc}") from exc
    except ImportError as exc:
        raise DiscoveryError(f"cannot import {name} (autodiscover_tasks): {exc}") from exc


def discover(packages: Packages, related_name: str | None = "tasks") -> list[ModuleType]:
    """Import the related module of each package; the modules found."""
    names = packages_of(packages)
    if packages is None and not names:
        log.warning(
            "autodiscover_tasks() was given no packages and found no configured Django "
            "project to read INSTALLED_APPS from: no tasks were imported; pass the "
            "packages, autodiscover_tasks(['proj.app1', 'proj.app2'])"
        )
    found = []
    for package in names:
        module = related_module(package, related_name)
        if module is not None:
            found.append(module)
    return found
