r"""The host a coercion argument names: where the coerced server is made to connect.

The forms the public tools and Windows accept (MS-DTYP 2.2.57 UNC; the WebDAV redirector's
DavWWWRoot forms, MS-WDV 2.2): a bare host ("10.0.0.66", "attacker.lab"), a UNC path
("\\10.0.0.66\share\x"), the long UNC form ("\\?\UNC\host\share", and the NT object
form "\??\UNC\host\share" CheeseOunce sends), WebDAV forms with a port
or SSL ("\\host@80\x", "host@8080/x", "\\host@SSL@443\x"), and URLs ("http://host:8080/x").
A local path ("C:\x") or an empty string names no host.
"""
from __future__ import annotations

# Prefixes of the long (extended-length) UNC form, MS-FSCC 2.1.5 / Win32 path syntax.
LONG_UNC_PREFIXES = ("\\\\?\\unc\\", "\\\\.\\unc\\", "\\??\\unc\\", "//?/unc/")
URL_SCHEMES = ("http://", "https://", "file://")
# A host name is at most 255 octets (RFC 1035 2.3.4); longer is not a host.
MAX_HOST_CHARS = 255


def host_of(value: str) -> str:
    """The host ``value`` names, lower case without port or WebDAV suffix; "" when none."""
    text = value.strip().lower()
    for prefix in LONG_UNC_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    for scheme in URL_SCHEMES:
        if text.startswith(scheme):
            text = text[len(scheme):]
            break
    text = text.lstrip("\\/")
    if len(text) >= 2 and text[1] == ":" and (len(text) == 2 or text[2] in "\\/"):
        return ""                                  # a drive-letter path: local
    for sep in ("\\", "/", "@"):
        text = text.split(sep, 1)[0]
    if text.startswith("[") and "]" in text:       # [IPv6] or [IPv6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:                     # host:port (an IPv6 literal has several)
        text = text.split(":", 1)[0]
    if not text or len(text) > MAX_HOST_CHARS or any(c.isspace() for c in text):
        return ""
    return text
