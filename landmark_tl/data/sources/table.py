"""Reading the CSV files of manifest-like sources: header checks, BOM and CRLF, row numbers."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path

from landmark_tl.core.io import describe_os_error, require_regular_file
from landmark_tl.data.records import CatalogError, show


def read_columns(
    path: Path, columns: Mapping[str, str], *, optional: tuple[str, ...] = ()
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) for each data row of the CSV file at ``path``.

    ``columns`` maps each column to read to the config key that names it, so a missing
    column is refused naming that key; columns in ``optional`` may be absent (then they
    are not in the rows). A UTF-8 byte-order mark and CRLF line ends are accepted; header
    names are compared without surrounding spaces. A row with too few fields raises.
    """
    try:
        require_regular_file(path)  # a FIFO or device would block the open forever
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            reader = csv.reader(f, strict=True)
            header = [name.strip() for name in next(reader, [])]
            wanted = _positions(path, header, columns, optional)
            for values in reader:
                if not values:
                    continue
                if len(values) < len(header):
                    raise CatalogError(
                        f"{show(path)}, line {reader.line_num}: {len(values)} fields for a "
                        f"header of {len(header)}; fix the row"
                    )
                yield reader.line_num, {name: values[i] for name, i in wanted.items()}
    except FileNotFoundError as error:
        raise CatalogError(f"{show(path)}: file not found; check the path") from error
    except IsADirectoryError as error:
        raise CatalogError(
            f"{show(path)}: is a folder, not a CSV file; name the CSV file itself "
            "(e.g. data.manifest=manifest.csv, relative to data.root)"
        ) from error
    except OSError as error:  # a FIFO, device or NUL byte (never opened), or unreadable
        raise CatalogError(
            f"{show(path)}: cannot be read as a CSV file ({describe_os_error(error)}); "
            "name a regular CSV file"
        ) from error
    except csv.Error as error:
        raise CatalogError(f"{show(path)}: not a valid CSV file ({error})") from error


def _positions(
    path: Path, header: list[str], columns: Mapping[str, str], optional: tuple[str, ...]
) -> dict[str, int]:
    missing = [c for c in columns if c not in header and c not in optional]
    if missing:
        keys = ", ".join(f"{columns[c]}={c}" for c in missing)
        raise CatalogError(
            f"{show(path)}: lacks columns {missing} (it has {header}); rename the columns "
            f"or set the config keys that name them (now {keys})"
        )
    return {c: header.index(c) for c in columns if c in header}
