"""The certs library has one error root: every refusal is a CertsError with a stable code."""

from __future__ import annotations

import pytest

from certs import dkg, frost
from certs.devca import DevCAError
from certs.ed25519_group import GroupError, Point
from certs.errors import CertsError, ErrorCode
from certs.spiffe import IdentityError, InvalidSpiffeId, SpiffeId
from certs.x509 import TbsRefused, X509Error, assemble_certificate

# Every exception class the library defines, and whether callers may catch it as ValueError.
LIBRARY_ERRORS: list[tuple[type[CertsError], bool]] = [
    (GroupError, True),
    (InvalidSpiffeId, True),
    (IdentityError, True),
    (X509Error, True),
    (TbsRefused, True),
    (DevCAError, False),
    (frost.FrostError, True),
    (frost.InvalidSignatureShares, True),
    (frost.NonceError, True),
    (frost.NonceReuseError, True),
    (frost.UnknownNonceError, True),
    (dkg.DkgError, True),
    (dkg.DkgMessageRejected, True),
    (dkg.DkgAborted, True),
]


@pytest.mark.parametrize(("cls", "is_value_error"), LIBRARY_ERRORS)
def test_every_library_error_is_a_certs_error_with_a_code(
    cls: type[CertsError], is_value_error: bool
) -> None:
    assert issubclass(cls, CertsError)
    assert issubclass(cls, ValueError) is is_value_error
    assert isinstance(cls.default_code, ErrorCode)


def test_codes_tell_the_kinds_apart() -> None:
    codes = [cls.default_code for cls, _ in LIBRARY_ERRORS]
    assert len(set(codes)) == len(codes)


def test_raised_errors_carry_their_code_and_message() -> None:
    with pytest.raises(CertsError) as spiffe:
        SpiffeId.parse("http://not-spiffe")
    assert spiffe.value.code is ErrorCode.SPIFFE_ID
    with pytest.raises(CertsError) as group:
        Point.from_bytes(b"\x00")
    assert group.value.code is ErrorCode.GROUP
    with pytest.raises(CertsError) as x509:
        assemble_certificate(b"", b"short")
    assert x509.value.code is ErrorCode.CERTIFICATE_FORMAT
    assert "64 bytes" in str(x509.value)
    shares = frost.InvalidSignatureShares([3, 1])
    assert shares.code is ErrorCode.INVALID_SIGNATURE_SHARES
    assert shares.culprits == (1, 3)
    assert str(shares) == "invalid signature share from participant(s) 1, 3"
    aborted = dkg.DkgAborted([dkg.Verdict(2, "lied")])
    assert aborted.code is ErrorCode.DKG_ABORTED
    assert str(aborted) == "run aborted: participant 2 is at fault: lied"


def test_a_code_can_be_given_per_instance() -> None:
    assert frost.FrostError("x", code=ErrorCode.NONCE).code is ErrorCode.NONCE
