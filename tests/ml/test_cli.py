"""The stages' shared command-line conventions: progress lines and the peak memory."""
import io

from shared_config.cli import PROGRESS_MARKER, Progress, peak_rss_mib


def test_progress_lines_say_done_rate_and_time_left_at_most_every_so_often():
    out = io.StringIO()
    progress = Progress("predict", total=1000, unit="products", every=3600, stream=out)
    progress.started -= 10  # ten seconds in
    progress.update(250)  # too soon after the start for a line
    assert out.getvalue() == ""
    progress.update(500, force=True)
    (line,) = out.getvalue().splitlines()
    assert line.startswith(PROGRESS_MARKER + "predict: 500 of 1,000 products, ")
    rate = float(line.split(", ")[1].removesuffix("/s").replace(",", ""))
    assert 45 <= rate <= 50
    left = float(line.split("about ")[1].split(" s left")[0].replace(",", ""))
    assert 9 <= left <= 11


def test_peak_memory_is_this_process_s_at_least():
    assert peak_rss_mib() > 10
