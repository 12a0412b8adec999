"""The outcome, mode and payload vocabularies each have one home and keep their wire values."""

from __future__ import annotations

import json

import pytest

from ddnn.codec import PAYLOADS, Payload, payload_bytes
from ddnn.data import IMAGE_BYTES, IMAGE_SHAPE, IMAGE_SHAPE_CHW
from ddnn.export.bundle import MODES, SPLIT_MODES, Mode
from ddnn.outcome import CLIENT_ONLY, Outcome
from ddnn.pb.ddnn.v1 import edge_pb2

PROTO_PREFIX = "OUTCOME_"


def test_outcome_is_pinned_to_the_protobuf_enum():
    # Every ddnn.v1.Outcome but UNSPECIFIED is an Outcome of the same name and number, and every
    # Outcome a service can send is on the wire: a sample's outcome crosses the wire as itself.
    wire = {name.removeprefix(PROTO_PREFIX): number for name, number in edge_pb2.Outcome.items()
            if number != edge_pb2.OUTCOME_UNSPECIFIED}
    sent = {o.name: o.value for o in Outcome if o not in CLIENT_ONLY}
    assert sent == wire
    # The client-only outcomes must never be mistaken for a wire value (or UNSPECIFIED).
    assert not {o.value for o in CLIENT_ONLY} & set(edge_pb2.Outcome.values())


def test_outcome_labels_are_the_report_and_metric_names():
    assert [o.label for o in Outcome] == ["edge", "cloud", "dropped", "degraded", "rejected"]
    assert Outcome(edge_pb2.OUTCOME_DEGRADED) is Outcome.DEGRADED
    assert edge_pb2.SampleResult(outcome=Outcome.CLOUD).outcome == edge_pb2.OUTCOME_CLOUD


@pytest.mark.parametrize("enum, values, flags", [
    (Mode, ("normal", "ws", "local", "auto"), MODES),
    (Payload, ("fp32", "fp16", "int8", "raw"), PAYLOADS),
])
def test_string_vocabularies_read_and_print_as_their_flag_values(enum, values, flags):
    assert flags == values and [m.value for m in enum] == list(values)
    for member, value in zip(enum, values, strict=True):
        assert member == value and enum(value) is member and {value: 1}[member] == 1
        # Messages, logging's lazy %s, metrics labels and CSV cells all print the flag value.
        assert str(member) == f"{member}" == "%s" % member == value  # noqa: UP031
        assert json.dumps({member: member}) == json.dumps({value: value})  # report keys and values
    assert set(SPLIT_MODES) == {Mode.NORMAL, Mode.WS}


def test_the_input_shape_constants_agree():
    assert IMAGE_SHAPE == (32, 32, 3) and IMAGE_SHAPE_CHW == (3, 32, 32) and IMAGE_BYTES == 3072
    assert payload_bytes((128, 8, 8), Payload.RAW) == IMAGE_BYTES == payload_bytes(IMAGE_SHAPE, "raw")
