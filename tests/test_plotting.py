"""Where figures go, and what a quick-run figure says."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from nodeform import plotting  # noqa: E402


@pytest.fixture
def no_choice(monkeypatch):
    monkeypatch.setattr(plotting, "_quick_choice", None)
    monkeypatch.delenv("NODEFORM_QUICK", raising=False)


def test_quick_mode_chosen_in_code_sends_figures_to_quick_and_says_so(no_choice, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("NODEFORM_FIGURES", str(tmp_path))
    assert plotting.is_quick() is False          # no env flag, no --quick, no choice
    assert plotting.is_quick(True) and plotting.is_quick()      # the choice holds
    fig, ax = plt.subplots()
    ax.set_title("Convergence")
    path = plotting.savefig(fig, "ch99_test")
    assert path == tmp_path / "quick" / "ch99_test.png" and path.stat().st_size > 0
    assert ax.get_title() == "Convergence (quick run)"
    assert not plotting.is_quick(False)


def test_full_run_title_is_left_alone(no_choice, tmp_path, monkeypatch):
    monkeypatch.setenv("NODEFORM_FIGURES", str(tmp_path))
    plotting.is_quick(False)
    fig = plt.figure()
    fig.suptitle("Speed")
    plotting.savefig(fig, "ch99_full")
    assert fig._suptitle.get_text() == "Speed" and (tmp_path / "ch99_full.png").exists()


def test_not_in_a_notebook_here():
    assert plotting.in_notebook() is False
