from functools import partial

import numpy as np
from PIL import Image

from pipeline.gallery import DPI, FACE_INCHES, NONE_PICTURE, FaceRow, draw_pair, draw_rows, write_numbered


def flat(colour, side=32):
    return np.full((side, side, 3), colour, dtype=np.uint8)


def colours(path):
    return {tuple(c) for c in np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)}


def test_pair_shows_both_faces_pixel_for_pixel(tmp_path):
    left, right = flat((200, 10, 10)), flat((10, 200, 10))
    left[0, 0] = (1, 2, 3)  # one odd pixel: enlarged with square pixels, never smoothed away
    draw_pair(left, right, ("a.jpg", "b.jpg"), "different people accepted\nscore 0.9 >= 0.5", tmp_path / "p.png")
    image = Image.open(tmp_path / "p.png")
    assert image.width >= 2 * FACE_INCHES * DPI and image.height > FACE_INCHES * DPI
    found = colours(tmp_path / "p.png")
    assert {(200, 10, 10), (10, 200, 10), (1, 2, 3)} <= found


def test_rows_frame_the_marked_images(tmp_path):
    rows = [
        FaceRow("a: 1 taken for b", [flat((0, 0, 200)), flat((0, 200, 200))], [True, False]),
        FaceRow("b: training", [flat((90, 90, 0))], [False]),
    ]
    draw_rows(rows, "a and b confused once", tmp_path / "r.png")
    found = colours(tmp_path / "r.png")
    assert {(0, 0, 200), (0, 200, 200), (90, 90, 0), (214, 39, 40)} <= found  # 214,39,40: the frame's red


def test_numbered_folder_is_replaced_whole(tmp_path):
    folder = tmp_path / "gallery"
    draw = partial(draw_pair, flat(0), flat(255), ("x", "y"), "t")
    write_numbered(folder, [draw] * 3, "nothing")
    assert sorted(p.name for p in folder.iterdir()) == ["1.png", "2.png", "3.png"]
    write_numbered(folder, [draw], "nothing")  # a shorter run leaves no stale 2.png, 3.png
    assert sorted(p.name for p in folder.iterdir()) == ["1.png"]
    write_numbered(folder, [], "no false accepts")
    assert sorted(p.name for p in folder.iterdir()) == [NONE_PICTURE]
