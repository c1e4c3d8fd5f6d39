"""Coercion seen through SMB3 encryption: coerced back-authentication and transform-header sizes."""
