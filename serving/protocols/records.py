"""Bodies of records (`{"records": [{column: value}]}`) read by a decoder typed from the model's schema."""

# msgspec checks each value's type while it parses (numbers or null, text or null, every column
# present, no other) and builds no dict per record: 1000 wide records in ~1.4 ms, where orjson
# and block reads took ~4.3 ms; text seen in training comes back as the schema's own strings. It
# keeps the last of repeated keys, and reads an integer beyond 64 bits as the float it rounds to
# (the value the strict reader's table holds too), so a body it takes is checked for repeated
# keys by its colons; any body it refuses or doubts goes to the strict readers, which word every
# refusal.

from __future__ import annotations

import sys
from itertools import chain, repeat
from operator import attrgetter
from typing import Literal

import msgspec
import numpy as np

from serving.core import check_range, check_row_count, out_of_range, within_range
from serving.protocols.decode import count_byte
from serving.schema import NUMBER, Feature, Row, Table, TableSchema

NAN = float("nan")


def _getter(names: list[str]):
    """attrgetter(*names), always giving a tuple."""
    if len(names) == 1:
        name = names[0]
        return lambda record: (getattr(record, name),)
    return attrgetter(*names) if names else (lambda record: ())


def _body_decoder(schema: TableSchema, key: str, nullable: tuple[str, ...], *, known: bool) -> msgspec.json.Decoder:
    """A decoder of `{key: [records]}` for schema; known: text only as the categories seen in training."""
    def text(feature: Feature) -> object:
        return Literal[tuple(map(sys.intern, feature.categories))] if known else str

    # The columns are attributes f0, f1, ... (a column's name need not be a Python name).
    fields = [(f"f{j}", (float if f.type == NUMBER else text(f)) | None, msgspec.field(name=f.name))
              for j, f in enumerate(schema.features)]
    # gc=False: a record holds numbers, text and None only, so it can be in no reference cycle, and
    # a thousand of them need not be tracked (and scanned) by the cyclic garbage collector.
    record = msgspec.defstruct("Record", fields, forbid_unknown_fields=True, gc=False)
    # The nullable keys (BentoML's clients send the unused argument as null) may be absent.
    others = [(name, msgspec.UnsetType | None, msgspec.UNSET) for name in nullable]
    return msgspec.json.Decoder(msgspec.defstruct("Body", [(key, list[record]), *others],
                                                  forbid_unknown_fields=True))


class RecordsReader:
    """Reads `{key: [records]}` (other keys only as null) for one schema; None where it is not certain."""

    def __init__(self, schema: TableSchema, *, key: str, nullable: tuple[str, ...] = ()) -> None:
        # Text as one of the categories seen in training first: msgspec then gives the schema's own
        # (interned) strings, no new string per value, and the encoder's lookups of those very
        # objects cost less. A body with other text is read again with any text allowed.
        known = all(f.categories for f in schema.features if f.type != NUMBER)
        self._decoders = [_body_decoder(schema, key, nullable, known=True)] if known and schema.categorical else []
        self._decoders.append(_body_decoder(schema, key, nullable, known=False))
        self._key, self._nullable = key, nullable
        attribute = {f.name: f"f{j}" for j, f in enumerate(schema.features)}
        self._numbers = _getter([attribute[name] for name in schema.numeric])
        self._texts = _getter([attribute[name] for name in schema.categorical])
        self._shape = len(schema.numeric), len(schema.categorical)
        # The colons of a body outside its text: one per key, and those in the keys themselves.
        self._colons_per_record = len(schema.features) + sum(name.count(":") for name in attribute)
        self._colons_of = {name: 1 + name.count(":") for name in (key, *nullable)}

    def read(self, body: bytes, *, max_rows: int) -> Table | None:
        """The records as a Table (refused as the strict path would), or None: let the strict path read it."""
        rows = self.read_row_or_table(body, max_rows=max_rows)
        return Table.from_rows([rows]) if type(rows) is Row else rows

    def read_row_or_table(self, body: bytes, *, max_rows: int) -> Row | Table | None:
        """read(), but one record comes back as a Row of Python values (the usual request)."""
        for decoder in self._decoders:
            try:
                document = decoder.decode(body)
                break
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
        else:
            return None
        records = getattr(document, self._key)
        present = [self._key, *(name for name in self._nullable if getattr(document, name) is not msgspec.UNSET)]
        if not records or not self._no_repeated_keys(body, records, present):
            return None
        check_row_count(len(records), max_rows=max_rows)
        if len(records) == 1:  # numpy's calls cost more than one row's work in Python
            numbers = self._numbers(records[0])
            if not within_range([x for x in numbers if x is not None]):  # finite: msgspec refuses 1e999
                raise out_of_range(0)
            return Row([NAN if x is None else x for x in numbers], self._texts(records[0]))
        numbers = np.array(list(map(self._numbers, records)), dtype=np.float64)  # None becomes NaN
        texts = np.array(list(map(self._texts, records)), dtype=object)
        return Table(numeric=check_range(numbers.reshape(len(records), self._shape[0])),
                     categorical=texts.reshape(len(records), self._shape[1]))

    def _no_repeated_keys(self, body: bytes, records: list, present: list[str]) -> bool:
        """True if the body holds exactly the colons of its keys and of its text: no key twice."""
        if b"\\" in body and b"\\u003" in body:  # an escaped colon is a colon the count misses
            return False
        colons = count_byte(body, b":")
        expected = sum(self._colons_of[name] for name in present) + len(records) * self._colons_per_record
        if colons == expected:
            return True
        # Text with colons in it (times, URLs): count those too, in C-level passes over the text.
        texts = list(filter(None, chain.from_iterable(map(self._texts, records))))
        return colons == expected + sum(map(str.count, texts, repeat(":")))
