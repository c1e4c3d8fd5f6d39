"""HTTP, only as far as NTLM in Authorization headers (WebDAV listeners of coercion attacks)."""
