"""ipywidgets explorers that sit on top of the notebooks' static figures.

Each explorer first draws its figure once with the default settings and shows it as an ordinary
(static) output, so a headless run and a notebook viewed on GitHub still show the figure; then,
where ipywidgets is available, it adds controls that redraw the figure in an ``Output`` area.
No widget state is stored in the saved notebooks (``tools/nb.py`` strips it).
"""

from __future__ import annotations

import numpy as np


def _nash_figure(P, pi_ref, tau, labels, title):
    import matplotlib.pyplot as plt

    from course_lib.plotting import plot_policies
    from course_lib.tabular import exploitability, regularised_nash, von_neumann_winner

    star = regularised_nash(P, pi_ref, tau)
    vnw = von_neumann_winner(P)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    plot_policies(
        ax1,
        {
            "pi_ref": pi_ref,
            f"Nash, tau={tau:.3g}": star,
            "von Neumann winner": vnw,
        },
        labels=labels,
        title=title,
    )
    taus = np.geomspace(1e-3, 1e2, 30)
    expl = [exploitability(P, regularised_nash(P, pi_ref, t)) for t in taus]
    ax2.loglog(taus, np.maximum(expl, 1e-16))
    ax2.axvline(tau, color="k", ls="--", lw=1)
    ax2.set_xlabel("tau")
    ax2.set_ylabel("exploitability of the Nash policy")
    ax2.set_title(f"exploitability at tau={tau:.3g}: {exploitability(P, star):.4f}")
    fig.tight_layout()
    return fig


def nash_explorer(games: dict, pi_ref=None, tau: float = 0.1, tau_range=(-3.0, 1.0)):
    """Bar chart of the regularised Nash equilibrium of a chosen game, with a tau slider.

    ``games`` maps a name to ``(P, labels)``. ``pi_ref`` defaults to uniform. ``tau_range`` is
    the slider's range in log10.
    The controls and a live figure area are displayed first; the static figure for the first
    game at ``tau`` follows, so it stays in the saved notebook and headless runs. Returns the
    widget box (``None`` if ipywidgets is not installed).
    """
    import matplotlib.pyplot as plt
    from IPython.display import display

    names = list(games)
    P0, labels0 = games[names[0]]

    def reference(n):
        if pi_ref is None or len(pi_ref) != n:
            return np.full(n, 1.0 / n)
        return np.asarray(pi_ref, dtype=float)

    box = None
    try:
        import ipywidgets as w
    except ImportError:
        w = None
    if w is not None:
        # controls and a live area first, so they sit on top of the static figure below
        game = w.Dropdown(options=names, value=names[0], description="game")
        slider = w.FloatLogSlider(
            value=tau, base=10, min=tau_range[0], max=tau_range[1], step=0.05, description="tau"
        )
        out = w.Output()

        def redraw(_change=None):
            P, labels = games[game.value]
            with out:
                out.clear_output(wait=True)
                f = _nash_figure(P, reference(len(P)), slider.value, labels, game.value)
                display(f)
                plt.close(f)

        game.observe(redraw, names="value")
        slider.observe(redraw, names="value")
        box = w.VBox([w.HBox([game, slider]), out])
        display(box)

    fig = _nash_figure(P0, reference(len(P0)), tau, labels0, f"{names[0]} (static, tau={tau:g})")
    display(fig)  # the static figure: an ordinary output, kept in the saved notebook
    plt.close(fig)  # so the inline backend does not show it a second time
    return box
