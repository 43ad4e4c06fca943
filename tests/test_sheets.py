"""The volume sheet: read literally, checked row by row against its schema, names unique."""

import re

import pytest

from unet_core.sheets import HELD_OUT, read_volume_sheet, volume_schema


def _sheet(tmp_path, text):
    path = tmp_path / "volumes.tsv"
    path.write_text(text)
    return path


def test_rows_are_read_literally_and_indexed_by_name(tmp_path):
    path = _sheet(
        tmp_path,
        "name\tpath\tvoxel_size\n# a comment line\n"
        "a\t/data/#1 'x' $HOME.tif\t40,4,4\nb.2\tb.h5:/raw\t\nc\tc.zarr\t0.05,.004,.004\n",
    )
    sheet = read_volume_sheet(path)
    assert list(sheet.index) == ["a", "b.2", "c"] and list(sheet["name"]) == ["a", "b.2", "c"]
    assert sheet.loc["a", "path"] == "/data/#1 'x' $HOME.tif"
    assert list(sheet["voxel_size"]) == ["40,4,4", "", "0.05,.004,.004"]


def test_a_trailing_tab_keeps_name_a_column(tmp_path):
    sheet = read_volume_sheet(_sheet(tmp_path, "name\tpath\na\tx.tif\t\n"))
    assert list(sheet.index) == ["a"] and sheet.loc["a", "path"] == "x.tif"


@pytest.mark.parametrize("text", [None, "", "# only a comment\n", "name\tpath\n", "name\n"])
def test_no_rows_means_no_volumes(tmp_path, text):
    sheet = read_volume_sheet(text and _sheet(tmp_path, text))
    assert sheet.empty and {"name", "path"} <= set(sheet.columns)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name\tvoxel_size\nextra\t1,1,1\n", "volume 'extra': 'path' is a required property; fix that row"),
        ("path\nx.tif\n", "volume '?': 'name' is a required property; fix that row"),
        (
            "name\tpath\tvoxel_size\nextra\t/x.tif\t0,0,0\n",
            "volume 'extra': voxel_size '0,0,0' is not valid (optional z,y,x voxel size, three numbers > 0); "
            "fix that row",
        ),
        ("name\tpath\tvoxel_size\ne\t/x.tif\t4,4\n", "volume 'e': voxel_size '4,4' is not valid"),
        (
            "name\tpath\nmy vol\t/x.tif\n",
            "volume 'my vol': name 'my vol' is not valid (a unique name of letters, digits, _ . and -;",
        ),
        ("name\tpath\ne\t\n", "volume 'e': path '' is not valid (TIFF stack, Zarr array"),
        (
            "name\tpath\na\tx.tif\nb\ty.tif\na\tz.tif\n",
            "volume names must be unique and not 'heldout'; rename ['a']",
        ),
        (f"name\tpath\n{HELD_OUT}\tx.tif\n", "must be unique and not 'heldout'; rename ['heldout']"),
    ],
)
def test_bad_rows_name_the_sheet_row_column_and_fix(tmp_path, text, message):
    path = _sheet(tmp_path, text)
    with pytest.raises(ValueError, match=re.escape(f"{path}: ") + ".*" + re.escape(message)):
        read_volume_sheet(path)


def test_a_missing_sheet_names_the_config_key(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"none.tsv: no such volume sheet; fix the config's `volumes`"
    ):
        read_volume_sheet(tmp_path / "none.tsv")


def test_the_schema_ships_with_the_package():
    schema = volume_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["name", "path"]
