"""The page's audit log is the cloud's (:mod:`layercast.cloud.audit`); kept here for old imports."""

from __future__ import annotations

from layercast.cloud.audit import AuditLog

__all__ = ["AuditLog"]
