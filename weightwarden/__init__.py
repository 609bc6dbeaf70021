"""weightwarden kernel: event types and their OCSF mapping, seals, keys, config, errors.

Everything else (the host agent, the collector, detectors and policies) builds on this
package; it imports none of them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
