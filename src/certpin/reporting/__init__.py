"""Pin-failure reports (RFC 7469 / TrustKit) sent from clients::

import certpin, certpin.reporting
reporter = certpin.reporting.reporting_hook(policy, spool_dir="~/.cache/myapp/pin-reports")
ctx = certpin.create_default_context(policy, on_failure=reporter)
"""

from certpin.reporting.reporter import Reporter, ReporterStats, reporting_hook

__all__ = ["Reporter", "ReporterStats", "reporting_hook"]
