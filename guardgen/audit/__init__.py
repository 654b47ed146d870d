"""Audit reports on a generative checkpoint (application layer): JSON + self-contained HTML + Markdown.

``run_audit(spec, ...)`` loads the model, draws one seeded sample pool and runs the sections in order:
provenance, quality, concept leakage, memorization, membership inference, copyright (NAF), forensics,
then verdicts against user-changeable thresholds (:class:`AuditConfig`). ``write_report`` writes the folder.
"""

from guardgen.audit.config import DEFAULT_THRESHOLDS, SCHEMA, SCHEMA_VERSION, AuditConfig
from guardgen.audit.report import write_report
from guardgen.audit.runner import run_audit

__all__ = ["AuditConfig", "DEFAULT_THRESHOLDS", "SCHEMA", "SCHEMA_VERSION", "run_audit", "write_report"]
