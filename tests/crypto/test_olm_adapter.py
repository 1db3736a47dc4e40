"""The python-olm adapter over vodozemac, alone and underneath mautrix.crypto.

tests/crypto/conftest.py installs the adapter as ``olm`` before this module imports
mautrix.crypto, as ``bridge.crypto`` does in the bridge. Most tests go through mautrix's own
subclasses (OlmAccount, Session, InboundGroupSession, OutboundGroupSession, OlmMachine), since
those are what the bridge runs.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import types
from datetime import datetime
from typing import Any, cast

import pytest
import vodozemac
from mautrix.crypto import InboundGroupSession, OlmAccount, OutboundGroupSession, Session
from mautrix.crypto.cross_signing_key import CrossSigningSeeds
from mautrix.crypto.signature import sign_olm, verify_signature_json
from mautrix.types import IdentityKey, OlmCiphertext, OlmMsgType, SigningKey

from bridge.crypto import olm_vodozemac as adapter
from tests.crypto.fake_homeserver import ALICE, ROOM


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def first_one_time_key(account: OlmAccount) -> IdentityKey:
    return IdentityKey(next(iter(account.one_time_keys["curve25519"].values())))


# --- install() ---------------------------------------------------------------------------------


def test_install_binds_olm_and_is_idempotent() -> None:
    import olm  # what mautrix.crypto imports

    assert olm is adapter
    adapter.install()
    assert sys.modules["olm"] is adapter
    assert not hasattr(sys.modules["_libolm"].lib, "olm_session_describe")


@pytest.mark.parametrize("name", ["olm", "_libolm"])
def test_install_refuses_when_libolm_is_already_imported(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    with pytest.raises(ImportError, match="already imported"):
        adapter.install()


# --- Ed25519: PkSigning and ed25519_verify --------------------------------------------------------

# RFC 8032 section 7.1, TEST 1 to 3: secret key (seed), public key, message, signature.
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_pk_signing_matches_rfc8032(seed: str, public: str, message: str, signature: str) -> None:
    signing = adapter.PkSigning(bytes.fromhex(seed))
    assert signing.public_key == b64(bytes.fromhex(public))
    assert signing.sign(bytes.fromhex(message)) == b64(bytes.fromhex(signature))
    adapter.ed25519_verify(
        signing.public_key, bytes.fromhex(message), signing.sign(bytes.fromhex(message))
    )


def test_ed25519_verify_rejects_what_was_not_signed() -> None:
    _, public, message, signature = (bytes.fromhex(x) for x in RFC8032[2])
    tampered = bytearray(signature)
    tampered[5] ^= 0x01
    other_key = b64(bytes.fromhex(RFC8032[1][1]))
    for key, msg, sig in [
        (b64(public), message, b64(bytes(tampered))),
        (b64(public), message + b"!", b64(signature)),
        (other_key, message, b64(signature)),
        (b64(public), message, "not base64 at all"),
    ]:
        with pytest.raises(adapter.OlmVerifyError):
            adapter.ed25519_verify(key, msg, sig)


def test_pk_signing_matches_libolm_and_rejects_bad_seeds() -> None:
    signing = adapter.PkSigning(bytes.fromhex(LIBOLM["pk_seed_hex"]))
    assert signing.public_key == LIBOLM["pk_public"]
    assert signing.sign("abc") == LIBOLM["pk_sig_abc"]
    adapter.ed25519_verify(LIBOLM["alice_ed25519"], "abc", LIBOLM["account_sig_abc"])
    assert len(adapter.PkSigning.generate_seed()) == 32
    with pytest.raises(adapter.PkSigningError):
        adapter.PkSigning(b"too short")
    with pytest.raises(ValueError):
        adapter.PkSigning(b"")


def test_cross_signing_keys_sign_as_mautrix_verifies() -> None:
    keys = CrossSigningSeeds.generate().to_keys()
    public = keys.public_keys
    data: dict[str, Any] = {
        "user_id": ALICE,
        "usage": ["self_signing"],
        "keys": {f"ed25519:{public.self_signing_key}": public.self_signing_key},
    }
    signature = sign_olm(dict(data), keys.master_key)
    data["signatures"] = {ALICE: {f"ed25519:{public.master_key}": signature}}
    assert verify_signature_json(cast(Any, data), ALICE, public.master_key, public.master_key)
    data["usage"] = ["user_signing"]
    assert not verify_signature_json(cast(Any, data), ALICE, public.master_key, public.master_key)


# --- Olm ---------------------------------------------------------------------------------------


def test_olm_sessions_as_mautrix_creates_them() -> None:
    alice, bob = OlmAccount(), OlmAccount()
    bob.generate_one_time_keys(1)
    # OutboundSession, then a pickle round trip (mautrix's new_outbound_session).
    outbound = alice.new_outbound_session(bob.identity_key, first_one_time_key(bob))
    first = outbound.encrypt("hello bob")
    assert first.type == OlmMsgType.PREKEY
    # InboundSession, remove_one_time_keys, a pickle round trip, and only then the decrypt.
    inbound = bob.new_inbound_session(alice.identity_key, first.body)
    assert isinstance(inbound, Session)
    assert inbound.id == outbound.id
    assert bob.one_time_keys == {"curve25519": {}}
    assert inbound.matches(first.body)
    assert inbound.decrypt(first) == "hello bob"
    # Until Bob answers, Alice keeps sending pre-key messages on the same session.
    again = outbound.encrypt("still there?")
    assert again.type == OlmMsgType.PREKEY
    assert inbound.matches(again.body)
    assert inbound.decrypt(again) == "still there?"
    reply = inbound.encrypt("hello alice")
    assert reply.type == OlmMsgType.MESSAGE
    assert outbound.decrypt(reply) == "hello alice"
    normal = outbound.encrypt("now a normal message \N{SNOWMAN}")
    assert normal.type == OlmMsgType.MESSAGE
    assert inbound.decrypt(normal) == "now a normal message \N{SNOWMAN}"
    assert inbound.id in inbound.describe()


def test_olm_failures_raise_the_error_mautrix_catches() -> None:
    alice, bob, carol = OlmAccount(), OlmAccount(), OlmAccount()
    bob.generate_one_time_keys(2)
    one_time_key = first_one_time_key(bob)
    outbound = alice.new_outbound_session(bob.identity_key, one_time_key)
    first = outbound.encrypt("hello bob")
    inbound = bob.new_inbound_session(alice.identity_key, first.body)
    assert inbound.decrypt(first) == "hello bob"
    # The plaintext kept for that first decrypt is handed out once: a replay fails.
    with pytest.raises(adapter.OlmSessionError):
        inbound.decrypt(first)
    # Its one-time key is used up, so the same message cannot open a second session.
    with pytest.raises(adapter.OlmSessionError):
        bob.new_inbound_session(alice.identity_key, first.body)
    with pytest.raises(adapter.OlmSessionError):
        bob.new_inbound_session(alice.identity_key, "bm90IGFuIG9sbSBtZXNzYWdl")
    # Another sender's pre-key message does not match this session and does not decrypt in it.
    stranger = carol.new_outbound_session(bob.identity_key, first_one_time_key(bob))
    foreign = stranger.encrypt("hi")
    assert not inbound.matches(foreign.body)
    with pytest.raises(adapter.OlmSessionError):
        inbound.decrypt(foreign)
    for body in ["not base64!", "AAAA", b64(b"\x03" + bytes(80))]:
        with pytest.raises(adapter.OlmSessionError):
            inbound.decrypt(OlmCiphertext(type=OlmMsgType.MESSAGE, body=body))


# --- Megolm ------------------------------------------------------------------------------------


def megolm_pair() -> tuple[OutboundGroupSession, InboundGroupSession]:
    account = OlmAccount()
    outbound = OutboundGroupSession(ROOM)
    outbound.shared = True
    inbound = InboundGroupSession(
        outbound.session_key, account.signing_key, account.identity_key, ROOM
    )
    return outbound, inbound


def test_megolm_decrypt_export_and_import_at_an_index() -> None:
    outbound, inbound = megolm_pair()
    assert inbound.id == outbound.id
    assert inbound.first_known_index == 0
    messages = [outbound.encrypt(f"message {i}") for i in range(3)]
    assert outbound.message_index == 3
    for i, message in enumerate(messages):
        assert inbound.decrypt(message) == (f"message {i}", i)
    imported = InboundGroupSession.import_session(
        inbound.export_session(1), inbound.signing_key, inbound.sender_key, ROOM
    )
    assert imported.id == inbound.id
    assert imported.first_known_index == 1
    assert imported.decrypt(messages[2]) == ("message 2", 2)
    with pytest.raises(adapter.OlmGroupSessionError):
        imported.decrypt(messages[0])
    with pytest.raises(adapter.OlmGroupSessionError):
        imported.export_session(0)
    ratcheted = inbound.ratchet_to(2)  # what mautrix does with ratchet_keys_on_decrypt
    assert ratcheted.first_known_index == 2
    assert ratcheted.room_id == ROOM


def test_megolm_wrong_session_or_garbage_raises_group_session_error() -> None:
    _, inbound = megolm_pair()
    other, _ = megolm_pair()
    with pytest.raises(adapter.OlmGroupSessionError):
        inbound.decrypt(other.encrypt("not for you"))
    for ciphertext in ["not base64!", "AAAA"]:
        with pytest.raises(adapter.OlmGroupSessionError):
            inbound.decrypt(ciphertext)
    with pytest.raises(adapter.OlmGroupSessionError):
        InboundGroupSession("bm90IGEga2V5", SigningKey("x"), IdentityKey("y"), ROOM)
    with pytest.raises(adapter.OlmGroupSessionError):
        InboundGroupSession.import_session("bm90IGEga2V5", SigningKey("x"), IdentityKey("y"), ROOM)


# --- Pickles -----------------------------------------------------------------------------------


def test_pickles_round_trip_with_the_passphrase_only() -> None:
    alice, bob = OlmAccount(), OlmAccount()
    bob.generate_one_time_keys(3)
    restored = OlmAccount.from_pickle(bob.pickle("secret"), "secret", shared=True)
    assert restored.identity_keys == bob.identity_keys
    assert restored.one_time_keys == bob.one_time_keys
    assert restored.shared
    with pytest.raises(adapter.OlmAccountError):
        OlmAccount.from_pickle(bob.pickle("secret"), "wrong", shared=False)

    session = alice.new_outbound_session(bob.identity_key, first_one_time_key(bob))
    now = datetime.now()
    copy = Session.from_pickle(session.pickle("secret"), "secret", creation_time=now)
    assert (copy.id, copy.creation_time) == (session.id, now)
    with pytest.raises(adapter.OlmSessionError):
        Session.from_pickle(session.pickle("secret"), "wrong", creation_time=now)

    outbound, inbound = megolm_pair()
    message = outbound.encrypt("pickled")
    inbound_copy = InboundGroupSession.from_pickle(
        inbound.pickle("secret"), "secret", inbound.signing_key, inbound.sender_key, ROOM
    )
    assert inbound_copy.decrypt(message) == ("pickled", 0)
    outbound_copy = adapter.OutboundGroupSession.from_pickle(outbound.pickle("secret"), "secret")
    assert (outbound_copy.id, outbound_copy.message_index) == (outbound.id, 1)
    with pytest.raises(adapter.OlmGroupSessionError):
        adapter.InboundGroupSession.from_pickle(inbound.pickle("secret"), "wrong")
    with pytest.raises(adapter.OlmGroupSessionError):
        adapter.OutboundGroupSession.from_pickle(outbound.pickle("secret"), "wrong")
    with pytest.raises(ValueError):
        adapter.Account.from_pickle(b"", "secret")
    # vodozemac pickles, keyed with SHA-256 of the passphrase.
    key = hashlib.sha256(b"secret").digest()
    assert vodozemac.Account.from_pickle(bob.pickle("secret").decode(), key)


# Made with libolm 3.2.16 (python-olm from PyPI, in a throwaway virtualenv outside the project),
# by this script; its JSON output is pasted below as LIBOLM.
#
#     import json, olm
#     P = "libolm-fixture-passphrase"
#     alice, bob = olm.Account(), olm.Account()
#     bob.generate_one_time_keys(1)
#     otk = next(iter(bob.one_time_keys["curve25519"].values()))
#     # Olm session pair, both libolm; first message is a pre-key message.
#     a_out = olm.OutboundSession(alice, bob.identity_keys["curve25519"], otk)
#     first = a_out.encrypt("first from alice")
#     b_in = olm.InboundSession(bob, first, alice.identity_keys["curve25519"])
#     bob.remove_one_time_keys(b_in)
#     assert b_in.decrypt(first) == "first from alice"
#     a_out.decrypt(b_in.encrypt("reply from bob"))
#     second = a_out.encrypt("second from alice")
#     # Second pre-key message for a fresh Olm session against a new one-time key.
#     bob.generate_one_time_keys(1)
#     otk2 = next(iter(bob.one_time_keys["curve25519"].values()))
#     prekey = olm.OutboundSession(alice, bob.identity_keys["curve25519"], otk2).encrypt("prekey to pickled bob")
#     # Megolm
#     out = olm.OutboundGroupSession()
#     inb = olm.InboundGroupSession(out.session_key)
#     m0, m1 = out.encrypt("megolm 0"), out.encrypt("megolm 1")
#     seed = bytes(range(32))
#     pk = olm.PkSigning(seed)
#     print(json.dumps({
#         "passphrase": P,
#         "alice_curve25519": alice.identity_keys["curve25519"],
#         "bob_account": bob.pickle(P).decode(),
#         "bob_identity_keys": bob.identity_keys,
#         "bob_session": b_in.pickle(P).decode(),
#         "bob_session_id": b_in.id,
#         "olm_message": second.ciphertext,
#         "olm_prekey": prekey.ciphertext,
#         "inbound_group": inb.pickle(P).decode(),
#         "outbound_group": out.pickle(P).decode(),
#         "group_session_id": out.id,
#         "megolm": [m0, m1],
#         "pk_seed_hex": seed.hex(),
#         "pk_public": pk.public_key,
#         "pk_sig_abc": pk.sign("abc"),
#         "account_sig_abc": alice.sign("abc"),
#         "alice_ed25519": alice.identity_keys["ed25519"],
#     }, indent=1))
LIBOLM = {
    "passphrase": "libolm-fixture-passphrase",
    "alice_curve25519": "sl0Rxk2m9aO2BmbfMMqtaHdUK8UN4kKj/Fpx80BuGCI",
    "bob_account": (
        "P6Fsv2GCJcGYLNa9Wnxbhba1U6e6xtz0FYfZeehZ8x69lx+GpZ9G1Skm0/+fMXVPn4q/Gere2BVP57qb"
        "5TDMcj4VvCqeVy2ug5Bp7+v2+JnDkAA+fLIyZICuzlEUJBYDhobr5j4tghe5H+tn9/BgzJQJDPQuRI/s"
        "oB1IjndLDNl8TPqaQ066d2VVCL6EnZGpbsp88KjYKMA33tTCDgtVjmmFm0lgOQHAkFBbvYUnnmRjKox+"
        "00ItOukDjVjrjzKZNm+l/gGpW4tZfuoK8tZtGu3KucOOzWnrLq6nTp+7RiWvXi/1MESeAEX/4+VUKpX/"
        "hiJw7/5jLFLlxbrvOIozFGC0cGBzLk/S"
    ),
    "bob_identity_keys": {
        "curve25519": "8HAJhduAsb8kgFGi04j1iBr0dQimb6td399LE9unJyY",
        "ed25519": "RQ4Mcz9tVZpoBi+imTxOq/5aw7Zwm5T2jBU0BIulXuw",
    },
    "bob_session": (
        "VrKp6n6XBGgxk+2RyEjX/x+FjzghvBJ8uRL3lAzHOchyOGQgxTn2/2Ac6lG4VMMYolTQNWbBJf8jm1/o"
        "6LeE70OMjib2vgUUp44lacGq978xEW7dy1Js4OIgNcCDG2Fk/ytTgWBmV2DfWX34iCmaV+trLvrtzRti"
        "UPGOgJKvKH1+66LHlUwwdJ5W/to2X4QKhaGg7arIsHLP3+0n11FvOc+uhzcxaOYBX4+hnUgViV7lzZ9S"
        "3RYduxfefX5J/RNWI4vpUkKdJ2XryMxs1m4tN+pc3wEb7qFsjYitV1evQQQgRLWndgcazE6YcfTrm2zs"
        "rnrxP43aMMHcx6nTAD65VkaK5kpBoagON1X7mCTLdXUMUA+5frEhD90dKFBjtk+mYUgYeOU9SnuCczsr"
        "1B2QEzha+fazaFEK4NDd0OTnNrFazX0rw3MqZg"
    ),
    "bob_session_id": "r1P7Ni4Bt4ky8QSh53wWHv6Nm7RZ0LAB8QiHvhnYyQU",
    "olm_message": (
        "Awog/X8TX1sp/onmrCe+uO4xz8v/RnLtpxhiPCWbwNcebHQQACIgvX39Qe8UH5tFotGiZNb9+U9YnSTD"
        "QYmzRI9qUZv9qClKV2JC4aGDpQ"
    ),
    "olm_prekey": (
        "AwogLW/SCD6OG2BhWYLgfAZXlyy4W8x9plV5RdYknhLWJV8SIL6ZBC2lndcl9mRPsAcnEODksu8wjO4E"
        "aZAbJFClBCkiGiCyXRHGTab1o7YGZt8wyq1od1QrxQ3iQqP8WnHzQG4YIiJPAwogL77Hd8XKlIyvM/I5"
        "ySUAbiRSrhYXMCtVMsYpPnHf2m8QACIg/drZpJraNFYFOauLVjWt45cyKiT/zzQMVsevUxZjq3GxwYne"
        "YXo3cQ"
    ),
    "inbound_group": (
        "GYrNYMJkNTFTRXXX06BndhYaTsug8u7q+tUdFveMaOOLdf/Q6D8FPoyH8+WHGakkyxtPuU8noVT9wQh6"
        "XLRDA/xdTMiCyp4/C5VQ4VEJpcwImL84/smLs1BNJukgZcHKOuEAYJLKYjAUj11muYyWXtN8hWq4ETFN"
        "kzFoSNATipzOx6JjJEL3DUe9MHjmQVFmWX9QN4ATaQi3ZGBKBDQrhYDPfcz+mCWrY/YF5FcmXE/P/S6t"
        "4qSBwW0egx92YW07L8OZ+ZdpM9aKyvbgZLLlxwrRurDBdSzOuZ6X5gD2vZb9zKwVWkXZEuK1LBmQsDyw"
        "wvqf9A718Gm4v726uSGxjYm5C/LFJxsaJOatwdXKflZZoyaZk5MivJdbkJVpjB42JYdvChqF6KU9t0Il"
        "WbUk0NM5Ikh3jDBT"
    ),
    "outbound_group": (
        "VBCaZzrqJDrYnUV6yu/sGZju16vc7cHWlu6dUDtb4GNeQpGpxcgtyvX1NI18R8eb0tkbRohISMCNRhnT"
        "hIEfrMKVeIxgFBh+Q2KCbfBYiGJCBlhl1lkI8LYA5CfNciboU7PXX+1SsvaVon1txbT1iP5WTWeDxBGt"
        "Dx5/zl4S2MazjiZoJx8BuDzM/WXie516vaZzQ3yDcVz9tAOEmK1vgl0nTTgA8CLb5bKyeO1BVMlNgFSb"
        "L3uY1MTpzI1T7YbOnjUe5DoWn1Y4SfrK99sqSR8sYhh0zaBMBDURoIvo1Ot0kwx+jVu9wYxyxGIFuYAj"
        "L8dp7lDfxuc"
    ),
    "group_session_id": "ijc3US75VNGBOJH9J0Sb3O5fd7GwWvnuLmLcfe9FQTY",
    "megolm": [
        (
            "AwgAEhBYkJyI6oKnrCRJxwesywLDSzJCV4rCMbJQoi9PUr4bk+jjtlx+dtj4O5qiIcbksSjYCBLUzczA"
            "xiaE4AnVs+ZF+vxR0PMZNrPGVrmY2lHdIBVeFVB/suwA"
        ),
        (
            "AwgBEhCqt7Ct8XdaxHhuA9nEd9NedH25C0VRUZJKGswG61ZG45tyb27RDXmTZ/LJu3ZJQ09kIxaFiF1Q"
            "4xT6PB9K6tuksuwB31bkyj8o1s6EA71ITDTRkbfM6nQL"
        ),
    ],
    "pk_seed_hex": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    "pk_public": "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg",
    "pk_sig_abc": (
        "zEbWLTdU9BdUsntuosssJyuvp6Wh9gYr0GD0FOUMqurC2matOc70QkqQI26pB7fYBX40Q9xav8mYaWfuchOkBw"
    ),
    "account_sig_abc": (
        "Xu/4rKuvh3dPYZTtQGdDYCa3p+qhTyNFqMntQRrwCSXKG0B9tgLi+rwvEyhQMFZlGIxcM5BhGkPZ4Ne0MHbyDA"
    ),
    "alice_ed25519": "lpmpBpkeOU+dzE7KD8SggZRi3MwJSzL+b9eNGg/5Ix8",
}


def test_reads_libolm_pickles() -> None:
    passphrase = LIBOLM["passphrase"]
    bob = OlmAccount.from_pickle(LIBOLM["bob_account"].encode(), passphrase, shared=True)
    assert bob.identity_keys == LIBOLM["bob_identity_keys"]
    # The account still holds the one-time key that libolm's Alice wrote a pre-key message to.
    fresh = bob.new_inbound_session(IdentityKey(LIBOLM["alice_curve25519"]), LIBOLM["olm_prekey"])
    prekey = OlmCiphertext(type=OlmMsgType.PREKEY, body=LIBOLM["olm_prekey"])
    assert fresh.decrypt(prekey) == "prekey to pickled bob"

    session = Session.from_pickle(
        LIBOLM["bob_session"].encode(), passphrase, creation_time=datetime.now()
    )
    assert session.id == LIBOLM["bob_session_id"]
    message = OlmCiphertext(type=OlmMsgType.MESSAGE, body=LIBOLM["olm_message"])
    assert session.decrypt(message) == "second from alice"

    inbound = InboundGroupSession.from_pickle(
        LIBOLM["inbound_group"].encode(), passphrase, SigningKey("x"), IdentityKey("y"), ROOM
    )
    assert inbound.id == LIBOLM["group_session_id"]
    assert [inbound.decrypt(m) for m in LIBOLM["megolm"]] == [("megolm 0", 0), ("megolm 1", 1)]
    # Stored again, it is a vodozemac pickle.
    key = hashlib.sha256(passphrase.encode()).digest()
    assert vodozemac.InboundGroupSession.from_pickle(inbound.pickle(passphrase).decode(), key)

    with pytest.raises(adapter.OlmAccountError):
        adapter.Account.from_pickle(LIBOLM["bob_account"], "wrong passphrase")
    # vodozemac's Python binding has no libolm reader for outbound group sessions.
    with pytest.raises(adapter.OlmGroupSessionError):
        adapter.OutboundGroupSession.from_pickle(LIBOLM["outbound_group"], passphrase)
