"""Assertions shared by the view tests (importable because pyproject puts tests/ on the path)."""
from labkit.viz import plots


def assert_one_group_each(fig, sizes, num_static=0):
    """Every control option shows the ``num_static`` static traces plus exactly its own group of
    ``sizes[i]`` traces, and the groups tile the rest of the figure without overlapping."""
    shown = plots.control_visibility(fig)
    assert len(shown) == len(sizes)
    start = num_static
    for (_, indices), size in zip(shown, sizes):
        assert indices == list(range(num_static)) + list(range(start, start + size))
        start += size
    assert start == len(fig.data)
