"""Image sizes are checked from the header before anything is decoded; S3 keys from input are checked (issue 19)."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest

from serving.inference import BadInput


def tiff(width: int, height: int, bits: int = 16, extra_ifd: bytes | None = None, order: str = "<") -> bytes:
    """A DNG header (IFD0: a CFA image of width x height, one strip of 64 bytes) without the pixels it claims."""
    entries = [
        (254, 4, 1, 0),  # NewSubfileType: full resolution
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, bits),
        (259, 3, 1, 1),  # no compression
        (262, 3, 1, 32803),  # CFA
        (273, 4, 1, 0),  # StripOffsets, patched below
        (277, 3, 1, 1),
        (279, 4, 1, width * height * bits // 8),  # StripByteCounts: what LibRaw would allocate for
        (50706, 1, 4, 0x01040000),  # DNGVersion 1.4
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    data_off = 8 + ifd_size
    out = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    out += struct.pack(order + "H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 273:
            value = data_off
        if typ == 3:
            out += struct.pack(order + "HHIHH", tag, typ, count, value, 0)
        elif typ == 1:
            out += struct.pack(order + "HHI", tag, typ, count) + bytes([1, 4, 0, 0])
        else:
            out += struct.pack(order + "HHII", tag, typ, count, value)
    out += struct.pack(order + "I", 0)
    return out + b"\x00" * 64


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming width x height, then an empty IDAT: no pixels at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 0) + b"IDAT" + struct.pack(">I", zlib.crc32(b"IDAT"))


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if LibRaw or PIL is asked to open the bytes."""
    import PIL.Image

    import serving.image

    def refuse(*a, **k):
        raise AssertionError("the image was handed to a decoder before its size was checked")

    monkeypatch.setattr(serving.image, "read_raw", refuse)  # what the server calls
    monkeypatch.setattr(PIL.Image, "open", refuse)


@pytest.mark.parametrize("order", ["<", ">"])
def test_a_dng_header_claiming_20000x20000_is_refused_before_libraw(raw_contract, no_decoding, order):
    from serving.image import DNG, decode

    data = tiff(20000, 20000, order=order)
    assert len(data) < 300  # the claim is in the tags only
    with pytest.raises(BadInput) as e:
        decode(data, DNG, raw_contract, "body")
    assert e.value.status == 422 and e.value.reason == "wrong_size"
    msg = e.value.details["body"]
    assert "20000x20000" in msg and "32x32" in msg, msg


def test_a_dng_of_another_size_or_odd_samples_is_refused_from_its_tags(raw_contract, no_decoding):
    from serving.image import DNG, decode

    with pytest.raises(BadInput) as e:
        decode(tiff(16, 16), DNG, raw_contract, "image")
    assert e.value.reason == "wrong_size" and "image is 16x16; contract raw_digits expects 32x32" in json.dumps(
        e.value.details
    )
    with pytest.raises(BadInput) as e:
        decode(tiff(32, 32, bits=64), DNG, raw_contract, "image")
    assert e.value.reason == "unsupported_raw" and "64 bits" in e.value.details["image"]


def test_a_looping_or_truncated_tiff_header_is_handled_without_decoding(raw_contract, no_decoding):
    from churnops.image.header import tiff_images
    from serving.image import DNG, decode

    looping = bytearray(tiff(32, 32))
    n = struct.unpack("<H", looping[8:10])[0]
    struct.pack_into("<I", looping, 10 + 12 * n, 8)  # next IFD = itself
    assert [(i.width, i.height) for i in tiff_images(bytes(looping))] == [(32, 32)]  # each IFD once
    truncated = b"II*\x00" + struct.pack("<I", 4000) + b"\x00" * 20
    with pytest.raises(BadInput) as e:
        decode(truncated, DNG, raw_contract, "body")
    assert e.value.reason == "unreadable_image" and "offset 4000" in e.value.details["body"]


def test_a_png_header_claiming_20000x20000_is_refused_before_pil(raw_contract, no_decoding):
    from serving.image import PNG, decode

    with pytest.raises(BadInput) as e:
        decode(png_header(20000, 20000), PNG, raw_contract, "body")
    assert (
        e.value.status == 422 and "image is 20000x20000; contract raw_digits expects 32x32" in e.value.details["body"]
    )


def test_the_generated_dngs_pass_the_header_check(raw_contract, tmp_path):
    pytest.importorskip("tifffile")
    from churnops.image.header import tiff_images
    from churnops.image.sensor import write_dng
    from serving.image import check_raw_header

    raw = np.random.default_rng(0).integers(0, 4000, (32, 32)).astype(np.uint16)
    write_dng(tmp_path / "d.dng", raw, raw_contract.sensor)
    data = (tmp_path / "d.dng").read_bytes()
    images = tiff_images(data)
    assert [(i.width, i.height, i.samples, i.bits) for i in images] == [(32, 32, 1, 16)]
    check_raw_header(data, raw_contract, "body")  # no error


# ---- S3 keys from input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,words",
    [
        ("images/../secrets/x.dng", "'..' segment"),
        ("../x", "'..' segment"),
        ("images/./x.dng", "'.' segment"),
        ("images//x.dng", "'empty' segment"),
        ("/etc/passwd", "starts with '/'"),
        ("images\\..\\x", "backslash"),
        ("", "is empty"),
    ],
)
def test_unsafe_keys_are_refused(key, words):
    from churnops.s3keys import UnsafeKeyError, check_key

    with pytest.raises(UnsafeKeyError) as e:
        check_key(key, "image_uri key")
    assert words in str(e.value)


def test_safe_keys_pass():
    from churnops.s3keys import check_key, split_s3_uri

    assert check_key("images/raw_digits/0/a..b.dng") == "images/raw_digits/0/a..b.dng"
    assert split_s3_uri("s3://b/images/x.dng") == ("b", "images/x.dng")


@pytest.mark.parametrize("uri", ["s3://churn-feature-store/images/../dead-letter/x", "s3://churn-feature-store//x"])
def test_stream_image_uri_with_dot_dot_is_a_dead_letter(uri):
    from churnops.settings import Settings
    from serving.image_stream import parse_record

    s = Settings(_env_file=None, bucket="churn-feature-store", image_uri_buckets="")  # not the session stack's bucket
    with pytest.raises(BadInput) as e:
        parse_record({"request_id": "r1", "image_uri": uri}, "1", s)
    assert e.value.reason == "invalid_image_uri" and (
        "segment" in e.value.details["image_uri"] or "starts with" in e.value.details["image_uri"]
    )
    assert parse_record({"request_id": "r1", "image_uri": "s3://churn-feature-store/a/b.dng"}, "1", s)[1:] == (
        "churn-feature-store",
        "a/b.dng",
    )


def test_a_manifest_naming_dot_dot_files_is_refused_before_anything_is_written(moto_endpoint, raw_contract, tmp_path):
    import uuid

    from churnops.aws import client
    from churnops.image.dataset import ImageDataError
    from churnops.image.feature_store import fetch_images
    from churnops.settings import Settings

    s = Settings(
        _env_file=None, aws_endpoint_url=moto_endpoint, bucket=f"keys-{uuid.uuid4().hex[:8]}", state_dir=tmp_path
    )
    s3 = client("s3", s)
    s3.create_bucket(Bucket=s.bucket)
    prefix = f"images/raw_digits/{'a' * 64}"
    manifest = {"contract": "raw_digits", "dataset_sha256": "a" * 64, "files": ["0/../../../../escape.txt"]}
    s3.put_object(Bucket=s.bucket, Key=f"{prefix}/manifest.json", Body=json.dumps(manifest).encode())
    s3.put_object(Bucket=s.bucket, Key="escape.txt", Body=b"x")
    with pytest.raises(ImageDataError, match=r"'\.\.' segment"):
        fetch_images(f"s3://{s.bucket}/{prefix}", raw_contract, s)
    assert not (tmp_path / "escape.txt").exists() and not list(tmp_path.rglob("escape.txt"))
    with pytest.raises(ImageDataError, match=r"'\.\.' segment"):
        fetch_images(f"s3://{s.bucket}/images/../{prefix}", raw_contract, s)
