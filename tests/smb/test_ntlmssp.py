import struct

import pytest
from impacket import ntlm

from sensor.smb.ntlmssp import (NtlmAuthenticate, NtlmChallenge, NtlmNegotiate, NtlmsspError,
                                find_ntlmssp)


def challenge_message(av_pairs: list[tuple[int, str]]) -> bytes:
    """MS-NLMP 2.2.1.2 CHALLENGE_MESSAGE with the given TargetInfo AV pairs, by the spec."""
    info = b"".join(struct.pack("<HH", k, len(v.encode("utf-16-le"))) + v.encode("utf-16-le")
                    for k, v in av_pairs) + struct.pack("<HH", 0, 0)
    target = "CORP".encode("utf-16-le")
    flags = 0xE2898215   # unicode, NTLM, target info, version, 128/56-bit...
    head = struct.pack("<8sIHHIIQQHHI", b"NTLMSSP\0", 2, len(target), len(target), 56, flags,
                       0x1122334455667788, 0, len(info), len(info), 56 + len(target))
    return head + b"\x0a\x00\x63\x45\x00\x00\x00\x0f" + target + info


CHALLENGE = challenge_message([(2, "CORP"), (1, "DC01"), (4, "corp.local"), (3, "dc01.corp.local")])


def test_challenge_av_pairs_inside_spnego():
    # A SPNEGO negTokenResp wraps the token; the signature is found inside it.
    blob = b"\xa1\x81\xc0\x30\x81\xbd\xa0\x03\x0a\x01\x01\xa2\x81\xa0\x04\x81\x9d" + CHALLENGE
    msg = find_ntlmssp(blob)
    assert msg == NtlmChallenge(0xE2898215, "DC01", "dc01.corp.local", "CORP")


def test_impacket_negotiate_and_authenticate_v2_and_v1():
    type1 = ntlm.getNTLMSSPType1("WS7", "CORP")
    assert isinstance(find_ntlmssp(type1.getData()), NtlmNegotiate)
    type3, _ = ntlm.getNTLMSSPType3(type1, CHALLENGE, "alice", "Passw0rd", "CORP", use_ntlmv2=True)
    auth = find_ntlmssp(b"\x30\x82\x01\x00" + type3.getData())
    assert (auth.user, auth.domain, auth.ntlm_version) == ("alice", "CORP", "NTLMv2")
    assert isinstance(auth, NtlmAuthenticate)
    type3, _ = ntlm.getNTLMSSPType3(type1, CHALLENGE, "bob", "Passw0rd", "CORP", use_ntlmv2=False)
    assert find_ntlmssp(type3.getData()).ntlm_version == "NTLMv1"


def test_oem_strings_and_anonymous():
    # AUTHENTICATE without NTLMSSP_NEGOTIATE_UNICODE: OEM names; empty NT response: anonymous.
    payload = b"WSX" + b"DOM" + b"usr"
    fields = struct.pack("<HHI", 0, 0, 72) * 2            # Lm, Nt responses: empty
    fields += struct.pack("<HHI", 3, 3, 75) + struct.pack("<HHI", 3, 3, 78)  # domain, user
    fields += struct.pack("<HHI", 3, 3, 72) + struct.pack("<HHI", 0, 0, 81)  # workstation, key
    msg = b"NTLMSSP\0" + struct.pack("<I", 3) + fields + struct.pack("<I", 0) + b"\0" * 8 + payload
    assert find_ntlmssp(msg) == NtlmAuthenticate(0, "usr", "DOM", "WSX", "")


def test_no_signature_is_not_ntlmssp_and_bad_offsets_raise():
    assert find_ntlmssp(b"\x60\x82kerberos-ticket") is None
    broken = bytearray(CHALLENGE)
    struct.pack_into("<I", broken, 44, 5000)   # TargetInfo offset past the end
    with pytest.raises(NtlmsspError):
        find_ntlmssp(bytes(broken))
    with pytest.raises(NtlmsspError):
        find_ntlmssp(b"NTLMSSP\0\x03\x00\x00\x00short")
