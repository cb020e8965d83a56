"""Text files in UTF-16 or UTF-32 are named as such, with the command that converts them.

A Windows editor's "Unicode" is UTF-16 with a byte-order mark: every other byte of Latin
text is NUL, which once read as "looks like a binary file". Each case goes through the
command line (``rnnlab data FILE``), as a user would meet it.
"""

from __future__ import annotations

import codecs
import subprocess

import pytest

from rnnlab.cli import main
from rnnlab.corpus import decode_utf8
from rnnlab.errors import RnnlabError

TEXT = "The Time Traveller (for so it will be convenient to speak of him)\ncafé, naïve\n" * 20


@pytest.mark.parametrize(
    "codec, bom, iconv_name, words",
    [
        (
            "utf-16-le",
            codecs.BOM_UTF16_LE,
            "UTF-16",
            ["UTF-16", "little-endian", "byte-order mark"],
        ),
        ("utf-16-be", codecs.BOM_UTF16_BE, "UTF-16", ["UTF-16", "big-endian", "byte-order mark"]),
        ("utf-32-le", codecs.BOM_UTF32_LE, "UTF-32", ["UTF-32", "little-endian"]),
        ("utf-32-be", codecs.BOM_UTF32_BE, "UTF-32", ["UTF-32", "big-endian"]),
        ("utf-16-le", b"", "UTF-16LE", ["UTF-16", "no byte-order mark"]),
        ("utf-16-be", b"", "UTF-16BE", ["UTF-16", "no byte-order mark"]),
    ],
)
def test_a_utf16_or_utf32_file_is_named_with_the_command_that_converts_it(
    tmp_path, capsys, codec, bom, iconv_name, words
):
    path = tmp_path / "notes.txt"
    path.write_bytes(bom + TEXT.encode(codec))
    assert main(["data", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rnnlab: error: "), err
    for word in [*words, f"iconv -f {iconv_name} -t UTF-8 {path}", "not UTF-8"]:
        assert word in err[0], (word, err[0])
    assert "binary" not in err[0]


def test_the_suggested_conversion_gives_a_text_rnnlab_reads(tmp_path):
    data = codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le")
    with pytest.raises(RnnlabError) as error:
        decode_utf8(data, "notes.txt")
    iconv_name = str(error.value).split("iconv -f ")[1].split()[0]
    converted = data.decode(iconv_name.replace("UTF-", "utf-"))  # what iconv would write
    assert decode_utf8(converted.lstrip("\ufeff").encode("utf-8"), "converted.txt") == TEXT
    try:
        iconv = subprocess.run(
            ["iconv", "-f", iconv_name, "-t", "UTF-8"], input=data, capture_output=True
        )
    except FileNotFoundError:
        return  # no iconv here; the codec above is the same conversion
    assert iconv.returncode == 0
    assert decode_utf8(iconv.stdout, "converted.txt") == TEXT


def test_binary_bytes_are_still_called_binary(tmp_path, capsys):
    path = tmp_path / "image.bin"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert main(["data", str(path)]) == 2
    assert "binary file" in capsys.readouterr().err
