"""Face classification and verification competition pipeline (CMU 11-785 HW2P2 style)."""
