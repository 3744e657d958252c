"""The registry of online (and offline) preference-optimisation algorithms: one entry each.

An algorithm is where its two completions come from and which loss of :mod:`course_lib.losses`
it takes. Everything else that depends on the algorithm (whether it reads beta, whether it samples
online) is derived from these fields, so adding an algorithm is adding one entry here.

=================  ============  ============  ===================
algorithm          y from        y' from       loss
=================  ============  ============  ===================
``online_dpo``     pi            pi            ``dpo_loss(h, p)``
``online_slic``    pi            pi            ``slic_loss(h, p)``
``online_ipo``     pi            pi            ``ipo_loss(h, p)``
``ipo_md``         mixture       mixture       ``ipo_loss(h, p)``
``nash_md_pg``     pi            mixture       ``nash_md_pg_loss``
``offline_ipo``    fixed pairs   fixed pairs   ``ipo_loss(h, p)``
``offline_dpo``    fixed pairs   fixed pairs   ``dpo_loss(h, p)``
=================  ============  ============  ===================
"""

from __future__ import annotations

from dataclasses import dataclass

from course_lib import losses


@dataclass(frozen=True)
class Algorithm:
    """One algorithm: where y and y' come from, which loss, and the facts the experiments need.

    ``lr`` is the tiny track's learning rate (full fine-tuning of a model 700 times smaller than
    the paper's, for a few dozen steps; the paper, Appendix B.3, uses 1e-4 for the contrastive
    losses and 3e-5 for Nash-MD-PG, and the ratio is kept). ``tau_scale`` multiplies the tau grid
    of a sweep: tau lives on different scales in each loss, and Nash-MD-PG's sits lower.
    """

    name: str
    loss: str  # "dpo", "ipo", "slic" (contrastive on h) or "nash_md_pg" (policy gradient)
    y_from: str  # "pi", "mixture" or "data"
    y2_from: str
    paper: str
    label: str  # the name tables and figures print (the paper's Table 2 names)
    lr: float = 5e-4
    tau_scale: float = 1.0
    per_token: bool = False  # h from log-ratios divided by completion length (TRL's IPO)
    seed_offset: int = 0  # added to a comparison's seed so that methods draw independently

    @property
    def online(self) -> bool:
        return self.y_from != "data"

    @property
    def uses_beta(self) -> bool:
        return "mixture" in (self.y_from, self.y2_from)


CAL = "Calandriello et al. 2024"
ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("online_ipo", "ipo", "pi", "pi", f"{CAL}, eq. 11", "IPO"),
        Algorithm(
            "ipo_md", "ipo", "mixture", "mixture", f"{CAL}, Sec. 5", "IPO-MD", seed_offset=1000
        ),
        Algorithm("online_dpo", "dpo", "pi", "pi", f"{CAL}, Sec. 6", "DPO", seed_offset=2000),
        Algorithm(
            "nash_md_pg",
            "nash_md_pg",
            "pi",
            "mixture",
            "Munos et al. 2024, App. F",
            "Nash-MD-PG",
            lr=1.5e-4,
            tau_scale=0.1,
            seed_offset=3000,
        ),
        Algorithm("online_slic", "slic", "pi", "pi", f"{CAL}, Sec. 6", "SLiC", seed_offset=4000),
        Algorithm(
            "online_slic_per_token",
            "slic",
            "pi",
            "pi",
            "TRL's length normalisation of h",
            "SLiC (per token)",
            per_token=True,
            seed_offset=5000,
        ),
        Algorithm("offline_ipo", "ipo", "data", "data", "Azar et al. 2023, eq. 17", "offline IPO"),
        Algorithm("offline_dpo", "dpo", "data", "data", "Rafailov et al. 2023", "offline DPO"),
    )
}

CONTRASTIVE = losses.CONTRASTIVE

#: The paper's comparison (its Table 2 without RL): what ``reproduce`` runs by default.
PAPER_METHODS = ("online_ipo", "ipo_md", "online_dpo", "nash_md_pg", "online_slic")


def online_algorithms() -> list[str]:
    return [name for name, alg in ALGORITHMS.items() if alg.online]


def method_seed(seed: int, name: str, common: bool = False) -> int:
    """The seed one method's run draws from: ``seed + seed_offset`` of the method.

    With one seed for every method (``common=True``, common random numbers) two methods whose
    policies are still close draw the *same* tokens from the same uniforms: at beta = 0.125 and
    pi close to pi_ref, IPO-MD's mixture samples equal online IPO's samples token for token, and
    the two runs cannot be told apart until their draws part (notebook 11 shows it). A
    comparison of methods wants independent draws, hence a fixed offset per method (online IPO's
    is 0, so its runs keep their seed).
    """
    return seed if common else seed + ALGORITHMS[name].seed_offset


def label(name: str) -> str:
    """The printed name of an algorithm (its registry name if it is not registered)."""
    return ALGORITHMS[name].label if name in ALGORITHMS else name
