from speechtl.adapt.progress import progress_printer


def test_progress_is_throttled_and_reports_rate_and_time_left():
    now = [100.0]
    lines: list[str] = []
    progress = progress_printer("encoder cache", lines.append, every_s=30.0, clock=lambda: now[0])
    now[0] = 110.0
    progress(8, 80)  # 10 s after the start: too soon
    assert lines == []
    now[0] = 140.0
    progress(16, 80)  # 40 s, 0.4 items/s, 64 left -> 160 s
    assert lines == ["encoder cache: 16 of 80 (20%), 0.40/s, about 2 min 40 s left"]
    now[0] = 150.0
    progress(24, 80)  # 10 s after the last line: quiet
    assert len(lines) == 1
    now[0] = 200.0
    progress(80, 80)  # the end is always reported, without a time left
    assert lines[-1] == "encoder cache: 80 of 80 (100%), 0.80/s"


def test_progress_at_zero_done_has_no_time_left():
    lines: list[str] = []
    now = [0.0]
    progress = progress_printer("x", lines.append, every_s=0.0, clock=lambda: now[0])
    now[0] = 5.0
    progress(0, 10)
    assert lines == ["x: 0 of 10 (0%), 0.00/s"]
