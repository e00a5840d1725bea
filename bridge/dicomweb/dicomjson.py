"""The DICOM JSON model (PS3.18 F.2): search results from the index, metadata from the files with a
BulkDataURI for pixel data and every value over the bulk data threshold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from bridge.dicomweb.media import UNCOMPRESSED
from bridge.search.attributes import Attribute
from bridge.search.query import Found, values_of

BULK_THRESHOLD = 1024  # bytes: larger binary values are referenced, not inlined
PIXEL_DATA = 0x7FE00010
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def element(tag: int, vr: str, values: list[Any]) -> dict[str, Any]:
    if not values:
        return {"vr": vr}
    if vr == "PN":
        values = [{"Alphabetic": str(value)} for value in values]
    return {"vr": vr, "Value": values}


def search_results(found: Found, extra: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row as a DICOM JSON object, its attributes in tag order; `extra(row)` adds attributes (e.g.
    Retrieve URL) to each. How each column becomes an element is chosen once, not per cell."""
    cells = [(f"{a.tag:08X}", _cell(a)) for a in found.attributes]
    keywords = [a.keyword for a in found.attributes]
    results = []
    order: list[str] | None = None
    for row in found.rows:
        result = {key: cell(value) for (key, cell), value in zip(cells, row, strict=True)}
        result.update(extra(dict(zip(keywords, row, strict=True))))
        if order is None:  # every row has the same keys
            order = sorted(result)
        results.append({key: result[key] for key in order})
    return results


def _cell(attribute: Attribute) -> Callable[[Any], dict[str, Any]]:
    """`element(tag, vr, dicom_values(attribute, value))` as a function of the value."""
    vr, values_from = attribute.vr, values_of(attribute)

    def cell(value: Any) -> dict[str, Any]:
        values = values_from(value)
        if not values:
            return {"vr": vr}
        if vr == "PN":
            values = [{"Alphabetic": str(value)} for value in values]
        return {"vr": vr, "Value": values}

    return cell


def metadata(ds: Dataset, bulk_base: str, *, bits_allocated: int | None = None) -> dict[str, Any]:
    """An instance read without its pixel data as DICOM JSON; the pixel data (when the instance has rows)
    and large binary values become BulkDataURIs under `bulk_base` (`.../instances/UID/bulkdata/TAG`; a
    nested value is named by its own tag, and the bulkdata route finds the first such value, depth first)."""

    def handler(elem: DataElement) -> str:
        return f"{bulk_base}/{elem.tag:08X}"

    result = ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=handler)
    if "Rows" in ds and f"{PIXEL_DATA:08X}" not in result:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        encapsulated = syntax is not None and syntax not in UNCOMPRESSED
        bits = bits_allocated if bits_allocated is not None else int(ds.get("BitsAllocated", 8) or 8)
        vr = "OB" if encapsulated or bits <= 8 else "OW"
        result[f"{PIXEL_DATA:08X}"] = {"vr": vr, "BulkDataURI": f"{bulk_base}/{PIXEL_DATA:08X}"}
    return result
