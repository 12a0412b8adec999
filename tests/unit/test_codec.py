import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ddnn.codec import ENC_AFFINE_INT8, Encoded, decode, encode, payload_bytes
from ddnn.errors import InvalidInput

feature_batches = arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 6)),
                         elements=st.floats(-1e4, 1e4, width=32))


@settings(max_examples=60, deadline=None)
@given(feature_batches)
def test_fp32_roundtrip_is_exact(x):
    assert np.array_equal(decode(encode(x, "fp32")), x)


@settings(max_examples=60, deadline=None)
@given(feature_batches)
def test_fp16_roundtrip_within_half_precision(x):
    y = decode(encode(x, "fp16"))
    assert np.allclose(y, x.astype(np.float16).astype(np.float32), equal_nan=False)


@settings(max_examples=80, deadline=None)
@given(feature_batches)
def test_int8_roundtrip_error_at_most_half_a_step_per_sample(x):
    enc = encode(x, "int8")
    y = decode(enc)
    flat, yflat = x.reshape(len(x), -1), y.reshape(len(y), -1)
    step = np.asarray(enc.scale, np.float32)
    err = np.abs(yflat - flat).max(axis=1)
    assert np.all(err <= step * 0.5 + 1e-3 * np.maximum(1, np.abs(flat).max(axis=1)))


def test_int8_per_sample_scales_make_samples_independent_of_batch_mates():
    rng = np.random.default_rng(0)
    a, b = rng.random((1, 8, 4, 4), np.float32), 100 * rng.random((1, 8, 4, 4), np.float32)
    alone = decode(encode(a, "int8"))
    together = decode(encode(np.concatenate([a, b]), "int8"))[:1]
    assert np.array_equal(alone, together)


def test_int8_is_about_a_quarter_of_fp32():
    x = np.random.default_rng(0).random((32, 128, 8, 8), np.float32)
    assert encode(x, "int8").nbytes / encode(x, "fp32").nbytes < 0.26
    assert payload_bytes((128, 8, 8), "int8") == 8192 + 8 and payload_bytes((128, 8, 8), "raw") == 3072


def test_raw_pixels_roundtrip_and_require_uint8():
    px = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert np.array_equal(decode(encode(px, "raw"), (32, 32, 3)), px)
    with pytest.raises(InvalidInput, match="uint8"):
        encode(px.astype(np.float32), "raw")


def good():
    return encode(np.ones((2, 3, 4, 4), np.float32), "fp32")


@pytest.mark.parametrize("mutate, message", [
    (lambda t: setattr(t, "dtype", 9), "dtype 9"),
    (lambda t: setattr(t, "shape", ()), "needs a batch dimension"),
    (lambda t: setattr(t, "shape", (0, 3, 4, 4)), "empty batch"),
    (lambda t: setattr(t, "data", t.data[:-4]), "bytes"),
    (lambda t: setattr(t, "shape", (2, 3, 4, 5)), "does not match"),
    (lambda t: setattr(t, "data", np.full((2, 3, 4, 4), np.nan, np.float32).tobytes()), "NaN/Inf"),
    (lambda t: setattr(t, "encoding", 7), "unknown tensor encoding"),
])
def test_malformed_tensors_are_named(mutate, message):
    t = good()
    mutate(t)
    with pytest.raises(InvalidInput, match=message):
        decode(t, expect_shape=(3, 4, 4))


def test_batch_limit_and_int8_scale_checks():
    with pytest.raises(InvalidInput, match="exceeds the limit of 1"):
        decode(good(), max_batch=1)
    t = encode(np.ones((2, 4), np.float32), "int8")
    bad = Encoded(t.dtype, t.shape, t.data, ENC_AFFINE_INT8, t.scale[:1], t.zero_point)
    with pytest.raises(InvalidInput, match="one scale and zero point per sample"):
        decode(bad)
    with pytest.raises(InvalidInput, match="unknown payload"):
        encode(np.ones((1, 2)), "bf16")
