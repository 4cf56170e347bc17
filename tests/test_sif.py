"""SIF reading, verification and signatures against the reference golden images."""

from __future__ import annotations

import base64
import json
import shutil
import uuid
from pathlib import Path

import pytest

from dacstyle.errors import ImageFormatError, ImageNotFoundError, SignatureError
from dacstyle.images.sif import DESCRIPTOR_SIZE, HEADER_SIZE, open_image, verify_image
from dacstyle.images.signatures import (
    DSSE_PAYLOAD_TYPE, inspect_signatures, verify_dsse_envelope, verify_signatures,
)
from dacstyle.images.sifwrite import GO_ZERO_TIME, ObjectInput, partition_extra, write_sif

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "sif-testdata"
pytestmark = pytest.mark.skipif(not TESTDATA.is_dir(),
                                reason=f"SIF golden images not found at {TESTDATA}")
IMAGES = TESTDATA / "images"
INPUT = TESTDATA / "input"
KEYS = sorted((TESTDATA / "keys").glob("*-public.pem")) if TESTDATA.is_dir() else []
GOLDEN = sorted(p.name for p in IMAGES.glob("*.sif")) if TESTDATA.is_dir() else []
NIL_UUID = str(uuid.UUID(int=0))


def test_all_21_golden_images_are_found():
    assert len(GOLDEN) == 21


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_image_opens_and_verifies(name):
    img = verify_image(IMAGES / name, require_squashfs=False)
    h = img.header
    assert (h.magic, h.version, h.descriptors_total, h.descriptors_offset) == ("SIF_MAGIC", "01", 48, 4096)
    assert h.descriptors_size == 48 * DESCRIPTOR_SIZE
    assert len(img.descriptors) == h.descriptors_total - h.descriptors_free
    assert h.data_offset + h.data_size == img.file_size
    assert [d.id for d in img.descriptors] == list(range(1, len(img.descriptors) + 1))
    json.dumps(img.to_dict())  # printable


@pytest.mark.parametrize("name", ["one-group.sif", "two-groups.sif", "one-group-signed-dsse.sif",
                                  "two-groups-signed-pgp.sif"])
def test_images_with_squashfs_are_runnable(name):
    img = verify_image(IMAGES / name)
    assert img.primary_partition().id == 2
    assert (img.squashfs_offset, img.squashfs_size) == (36864, 4096)
    assert img.read_object(img.primary_partition()) == (INPUT / "root.squashfs").read_bytes()
    assert img.header.arch == "386"


def test_header_fields():
    assert open_image(IMAGES / "empty-id.sif").header.uuid == "3fa802cc-358b-45e3-bcc0-69dc7a45f9f8"
    assert open_image(IMAGES / "empty-launch-script.sif").header.launch_script == "#!/usr/bin/env run-script\n"
    h = open_image(IMAGES / "one-object-time.sif").header
    assert h.created_at == h.modified_at == 1593475316  # 2020-06-30T00:01:56Z
    h = open_image(IMAGES / "empty.sif").header
    assert (h.arch, h.uuid, h.created_at, h.data_size) == ("unknown", NIL_UUID, GO_ZERO_TIME, 0)


def _only(name):
    img = open_image(IMAGES / name)
    (d,) = img.descriptors
    return img, d


def test_generic_json_object():
    img, d = _only("one-object-generic-json.sif")
    assert (d.data_type, d.name, d.group_id, img.read_object(d)) == ("generic-json", "data.json", 1, b"{}")


def test_crypto_message_object():
    img, d = _only("one-object-crypt-message.sif")
    assert d.data_type == "crypto-message"
    assert d.extra == {"format": "openpgp", "message": "clear-signature"}
    assert img.read_object(d) == b"\xfe\xfe\xf0\xf0"


def test_sbom_object():
    img, d = _only("one-object-sbom.sif")
    assert (d.data_type, d.extra) == ("sbom", {"format": "cyclonedx-json"})
    assert json.loads(img.read_object(d)) == json.loads((INPUT / "sbom.cdx.json").read_bytes())


@pytest.mark.parametrize("name,dtype,source", [
    ("one-object-oci-root-index.sif", "oci-root-index", "index.json"),
    ("one-object-oci-blob.sif", "oci-blob", "oci-config.json"),
])
def test_oci_objects_carry_their_digest(name, dtype, source):
    import hashlib

    img, d = _only(name)
    data = img.read_object(d)
    assert d.data_type == dtype and data == (INPUT / source).read_bytes()
    assert d.extra == {"digest": "sha256:" + hashlib.sha256(data).hexdigest()}


def test_partitions_and_groups():
    img = open_image(IMAGES / "two-groups.sif")
    sys_part, prim, ext3 = img.descriptors
    assert sys_part.extra == {"fs_type": "raw", "part_type": "system", "arch": "386"}
    assert img.read_object(sys_part) == b"\xfa\xce\xfe\xed"
    assert prim.extra == {"fs_type": "squashfs", "part_type": "primary-system", "arch": "386"}
    assert ext3.extra == {"fs_type": "ext3", "part_type": "system", "arch": "amd64"}
    assert (ext3.group_id, ext3.size) == (2, (INPUT / "root.ext3").stat().st_size)
    assert img.read_object(ext3) == (INPUT / "root.ext3").read_bytes()
    assert img.deffile() is None and img.labels() == {}


def test_signature_descriptors():
    img = open_image(IMAGES / "two-groups-signed-pgp.sif")
    s1, s2 = img.find("signature")
    assert (s1.link, s1.link_is_group, s2.link, s1.group_id) == (1, True, 2, 0)
    assert s1.extra == {"hash_type": "sha256", "entity": "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84"}
    legacy = open_image(IMAGES / "one-group-signed-legacy-all.sif").find("signature")
    assert [(s.link, s.link_is_group, s.extra["hash_type"], s.name) for s in legacy] == [
        (1, False, "sha384", "part-signature"), (2, False, "sha384", "part-signature")]


# -- signatures ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,groups", [("one-group-signed-dsse.sif", 1),
                                         ("two-groups-signed-dsse.sif", 2)])
def test_dsse_signatures_verify(name, groups):
    results = verify_signatures(open_image(IMAGES / name), KEYS)
    assert len(results) == groups
    for r in results:
        assert r.kind == "dsse" and r.authenticated and r.integrity_ok and r.error is None
        assert sorted(Path(k).name for k in r.keys) == ["ed25519-public.pem", "rsa-public.pem"]


@pytest.mark.parametrize("key", ["ed25519-public.pem", "rsa-public.pem"])
def test_each_dsse_key_alone_verifies(key):
    verify_signatures(open_image(IMAGES / "one-group-signed-dsse.sif"), [TESTDATA / "keys" / key])


def test_wrong_key_fails():
    with pytest.raises(SignatureError, match="no DSSE signature"):
        verify_signatures(open_image(IMAGES / "one-group-signed-dsse.sif"),
                          [TESTDATA / "keys" / "ecdsa-public.pem"])


def test_unsigned_image_fails():
    with pytest.raises(SignatureError, match="not signed"):
        verify_signatures(open_image(IMAGES / "one-group.sif"), KEYS)


@pytest.mark.parametrize("name", [n for n in GOLDEN if "pgp" in n or "legacy" in n])
def test_pgp_and_legacy_signatures_are_integrity_checked_not_authenticated(name):
    img = open_image(IMAGES / name)
    results = inspect_signatures(img, KEYS)
    assert results and all(r.integrity_ok and not r.authenticated for r in results)
    with pytest.raises(SignatureError, match="no signature verified"):
        verify_signatures(img, KEYS)


def _flip(tmp_path, name, offset):
    copy = tmp_path / name
    shutil.copyfile(IMAGES / name, copy)
    data = bytearray(copy.read_bytes())
    data[offset] ^= 0x01
    copy.write_bytes(bytes(data))
    return open_image(copy)


@pytest.mark.parametrize("where,offset,message", [
    ("squashfs data", 36864 + 100, "data integrity compromised: object 2"),
    ("raw partition", 32768, "data integrity compromised: object 1"),
    ("image uuid", 48, "header integrity compromised"),
    ("descriptor name", 4096 + DESCRIPTOR_SIZE + 73, "descriptor integrity compromised: object 2"),
    ("signature", 40960 + 1600, "no DSSE signature|malformed"),
])
def test_tampered_dsse_image_fails(tmp_path, where, offset, message):
    img = _flip(tmp_path, "one-group-signed-dsse.sif", offset)
    with pytest.raises(SignatureError, match=message):
        verify_signatures(img, KEYS)


def test_tampered_pgp_image_is_reported(tmp_path):
    img = _flip(tmp_path, "one-group-signed-pgp.sif", 36864 + 100)
    (r,) = inspect_signatures(img)
    assert not r.integrity_ok and "object 2" in r.error


def test_ecdsa_dsse_envelope():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    payload = b'{"version":1}'
    pae = b"DSSEv1 %d %s %d %s" % (len(DSSE_PAYLOAD_TYPE), DSSE_PAYLOAD_TYPE.encode(),
                                   len(payload), payload)
    sig = key.sign(pae, ec.ECDSA(hashes.SHA256()))
    env = json.dumps({"payloadType": DSSE_PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
                      "signatures": [{"keyid": "", "sig": base64.b64encode(sig).decode()}]}).encode()
    assert verify_dsse_envelope(env, [("gen", key.public_key())]) == (payload, ["gen"])
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(SignatureError):
        verify_dsse_envelope(env, [("other", other)])


# -- malformed files ----------------------------------------------------------------------

@pytest.mark.parametrize("cut", [0, 10, 40, HEADER_SIZE - 1, HEADER_SIZE, 5000, 32175, 32768, 36864 + 2,
                                 36864 + 100, 40959])
def test_truncated_copies_fail_with_one_clear_error(tmp_path, cut):
    copy = tmp_path / "cut.sif"
    copy.write_bytes((IMAGES / "one-group.sif").read_bytes()[:cut])
    with pytest.raises(ImageFormatError, match=r"truncated at byte \d+|bad magic") as info:
        verify_image(copy)
    assert str(copy) in str(info.value) and "\n" not in str(info.value)


def test_text_file_named_sif(tmp_path):
    text = tmp_path / "notes.sif"
    text.write_text("Bootstrap: docker\nFrom: ubuntu\n" * 20)
    with pytest.raises(ImageFormatError, match=r"bad magic .*\(not a SIF file\)"):
        open_image(text)


def test_image_without_partition():
    with pytest.raises(ImageFormatError, match="has no squashfs primary partition"):
        verify_image(IMAGES / "empty.sif")


def test_declared_squashfs_with_wrong_magic():
    with pytest.raises(ImageFormatError, match=r"bad magic .*\(expected 'hsqs'\)"):
        verify_image(IMAGES / "one-group-signed-legacy.sif")


def test_descriptor_out_of_bounds(tmp_path):
    copy = tmp_path / "oob.sif"
    data = bytearray((IMAGES / "one-group.sif").read_bytes())
    off = 4096 + DESCRIPTOR_SIZE + 25  # descriptor 1 (object 2): offset field
    data[off:off + 8] = (10**9).to_bytes(8, "little")
    copy.write_bytes(bytes(data))
    with pytest.raises(ImageFormatError, match=r"descriptor 1 \(object 2, partition\) out of bounds"):
        verify_image(copy)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageNotFoundError):
        open_image(tmp_path / "nope.sif")
    with pytest.raises(ImageFormatError, match="directory"):
        open_image(tmp_path)


# -- writing ------------------------------------------------------------------------------

def test_writer_reproduces_reference_images_byte_for_byte(tmp_path):
    det = dict(launch_script="", image_id=NIL_UUID, timestamp=GO_ZERO_TIME)
    out = write_sif(tmp_path / "g.sif", [
        ObjectInput("partition", b"\xfa\xce\xfe\xed", extra=partition_extra("raw", "system", "386")),
        ObjectInput("partition", INPUT / "root.squashfs", extra=partition_extra("squashfs", "primary-system", "386")),
    ], **det)
    assert out.read_bytes() == (IMAGES / "one-group.sif").read_bytes()
    out = write_sif(tmp_path / "e.sif", [], **det)
    assert out.read_bytes() == (IMAGES / "empty.sif").read_bytes()
    out = write_sif(tmp_path / "j.sif", [ObjectInput("generic-json", b"{}", name="data.json")], **det)
    assert out.read_bytes() == (IMAGES / "one-object-generic-json.sif").read_bytes()


# -- CLI ----------------------------------------------------------------------------------

def test_cli_inspect_json(capsys):
    import argparse

    from dacstyle.cli.sif import register

    parser = argparse.ArgumentParser(prog="dacstyle")
    register(parser.add_subparsers())
    args = parser.parse_args(["inspect", str(IMAGES / "one-group-signed-dsse.sif"), "--json",
                              "--key", str(TESTDATA / "keys" / "ed25519-public.pem")])
    assert args.func(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert [o["data_type"] for o in info["objects"]] == ["partition", "partition", "signature"]
    assert info["signatures"][0]["authenticated"] and info["signatures"][0]["integrity_ok"]
    args = parser.parse_args(["inspect", str(IMAGES / "two-groups-signed-pgp.sif")])
    assert args.func(args) == 0
    assert "signature 5 (pgp, group 2): integrity ok, signer not checked" in capsys.readouterr().out
