"""The figures the notebooks share, and the course's plotting style."""

from __future__ import annotations


def set_style() -> None:
    """A plain, readable style that renders the same headless and in JupyterLab."""
    import matplotlib

    matplotlib.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 100,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
            "font.size": 10,
            "svg.hashsalt": "course",  # stable SVG ids, so saved figures do not churn
        }
    )


# ---- tabular games (notebooks 01, 02, 04) ------------------------------------------------------
def plot_preference_matrix(ax, P, labels=None, title=None, cmap="RdBu_r"):
    """Heat map of ``P[i, j] = P(y_i > y_j)`` with the values written in the cells."""
    import numpy as np

    P = np.asarray(P, dtype=float)
    n = P.shape[0]
    labels = list(labels) if labels is not None else [f"y{i + 1}" for i in range(n)]
    im = ax.imshow(P, vmin=0.0, vmax=1.0, cmap=cmap)
    ax.set_xticks(range(n), labels)
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("y' (column)")
    ax.set_ylabel("y (row)")
    ax.grid(False)
    if n <= 8:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{P[i, j]:.2f}", ha="center", va="center", fontsize=8)
    if title:
        ax.set_title(title)
    return im


def plot_policies(ax, policies, labels=None, title=None):
    """Grouped bars: one group per response, one bar per named policy (``{name: pi}``)."""
    import numpy as np

    names = list(policies)
    n = len(np.asarray(policies[names[0]]))
    labels = list(labels) if labels is not None else [f"y{i + 1}" for i in range(n)]
    width = 0.8 / len(names)
    x = np.arange(n)
    for k, name in enumerate(names):
        ax.bar(x + (k - (len(names) - 1) / 2) * width, policies[name], width, label=name)
    ax.set_xticks(x, labels)
    ax.set_ylabel("probability")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)


def simplex_xy(pi):
    """Barycentric coordinates of 3-action policies (shape (..., 3)) -> 2-D points in the
    equilateral triangle with corners y1 = (0, 0), y2 = (1, 0), y3 = (1/2, sqrt(3)/2)."""
    import numpy as np

    pi = np.asarray(pi, dtype=float)
    return np.stack([pi[..., 1] + 0.5 * pi[..., 2], (np.sqrt(3) / 2) * pi[..., 2]], axis=-1)


def simplex_axes(ax, labels=("y1", "y2", "y3")):
    """Draw the probability simplex of 3 responses on ``ax`` (corners labelled)."""
    import numpy as np

    corners = simplex_xy(np.eye(3))
    ax.plot(*np.vstack([corners, corners[:1]]).T, color="0.5", lw=1)
    offsets = [(-0.05, -0.05), (0.05, -0.05), (0.0, 0.04)]
    for (x, y), lab, (dx, dy) in zip(corners, labels, offsets, strict=True):
        ax.text(x + dx, y + dy, lab, ha="center", va="center")
    ax.set_aspect("equal")
    ax.axis("off")


def plot_simplex_path(ax, path, label=None, marker_end="o", **kwargs):
    """A trajectory of 3-action policies (shape (T, 3)) on simplex axes; marks the last point."""
    xy = simplex_xy(path)
    (line,) = ax.plot(xy[:, 0], xy[:, 1], label=label, **kwargs)
    if marker_end:
        ax.plot(xy[-1, 0], xy[-1, 1], marker_end, color=line.get_color())
    return line
