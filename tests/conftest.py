"""Shared test fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (tiny tensors: more threads only wait for each other,
    and on a busy 2-core machine that wait dominates), then restore the setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def check_clean_error(result, *words):
    """A user's mistake: exit status 2, one line 'rnnlab: error: ...' naming ``words``, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture
def clean_error():
    """The checker above, for tests that run the command as a subprocess."""
    return check_clean_error
