"""Optional dependencies: imported only where they are used, and a missing one names the extra that installs it.

The core install (``pip install peftlab``) is torch, transformers and a few small packages. The rest come as
extras (see ``pyproject.toml``):

====================  ==========================================  ===========================================
extra                 packages                                    needed by
====================  ==========================================  ===========================================
``metrics``           sacrebleu, pycocoevalcap                    the E2E metrics (``peftlab evaluate e2e``,
                                                                  the final evaluation of an E2E run)
``zoo``               gguf                                        ``peftlab models install smollm2-135m``
                                                                  (one-time conversion of its GGUF file)
``report``            matplotlib                                  ``peftlab report`` and benchmark plots
``tracking``          tensorboard                                 ``run.report_to=auto`` logging
``all``               all of the above
====================  ==========================================  ===========================================

Call :func:`require` inside the function that needs the package, never at module level.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import PeftlabError

__all__ = ["MissingDependencyError", "missing_message", "require"]


class MissingDependencyError(PeftlabError, ImportError):
    """An optional dependency is not installed; the message names the ``peftlab[...]`` extra that installs it."""


def missing_message(package: str, extra: str, purpose: str) -> str:
    """The one wording for a missing optional package, e.g. ``BLEU needs sacrebleu: pip install 'peftlab[metrics]'``."""
    return (f"{purpose} needs {package}: pip install 'peftlab[{extra}]' "
            f"(from a checkout: pip install -c constraints.txt -e '.[{extra}]')")


def require(module: str, extra: str, purpose: str, *, package: str | None = None) -> ModuleType:
    """Import ``module`` (dotted names allowed) or raise :class:`MissingDependencyError` naming ``extra``.

    Args:
        module: what to import, e.g. ``"sacrebleu"`` or ``"pycocoevalcap.rouge.rouge"``.
        extra: the extra of peftlab that installs it (``"metrics"``, ``"zoo"``, ``"report"``, ``"tracking"``).
        purpose: what needs it, as the start of the message (``"BLEU"``, ``"peftlab report's plots"``).
        package: the distribution name shown in the message (default: the top-level module name).
    """
    top = module.split(".", 1)[0]
    try:
        importlib.import_module(top)  # first, so that a missing top-level package is seen even when a
        return importlib.import_module(module)  # submodule of it is still cached in sys.modules
    except ImportError as err:
        message = missing_message(package or top, extra, purpose)
        missing = getattr(err, "name", None) or ""
        if missing != top and not missing.startswith(top + "."):  # installed, but one of its own imports failed
            message += f"; importing it failed: {err}"
        raise MissingDependencyError(message) from err
