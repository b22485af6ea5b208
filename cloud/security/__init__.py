"""Who may do what: credentials, authentication, roles, TLS, rate limits, the audit log."""
