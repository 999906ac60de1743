"""StackedImages reads rows of several arrays as if they were one, memory maps included."""

import numpy as np
import pytest

from pipeline.stacked_images import StackedImages


@pytest.fixture
def parts(tmp_path):
    a = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
    b = 200 + np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)
    np.save(tmp_path / "a.npy", a)
    return np.load(tmp_path / "a.npy", mmap_mode="r"), b


def test_rows_match_the_concatenation(parts):
    stacked, whole = StackedImages(*parts), np.concatenate(parts)
    assert len(stacked) == 8 and stacked.shape == whole.shape and stacked.dtype == np.uint8
    for i in range(-8, 8):
        np.testing.assert_array_equal(stacked[i], whole[i])
    rows = np.array([7, 0, 4, 5, 5, -1])
    np.testing.assert_array_equal(stacked[rows], whole[rows])
    mask = np.array([True, False] * 4)
    np.testing.assert_array_equal(stacked[mask], whole[mask])
    assert stacked[np.array([], dtype=int)].shape == (0, 2, 2, 3)


def test_out_of_range_and_mismatched_shapes_are_refused(parts):
    stacked = StackedImages(*parts)
    with pytest.raises(IndexError):
        stacked[8]
    with pytest.raises(IndexError):
        stacked[np.array([0, 9])]
    with pytest.raises(ValueError, match="different image shapes"):
        StackedImages(parts[0], np.zeros((1, 3, 3, 3), np.uint8))
