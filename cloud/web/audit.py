"""The page's audit log is the cloud's (:mod:`layercast.cloud.security.audit`); kept here for old imports."""

from __future__ import annotations

from layercast.cloud.security.audit import AuditLog

__all__ = ["AuditLog"]
